package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.MockConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.MockProducer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The Kafka loop against Kafka's own mock consumer and producer. */
class ParticipantLoopTest {
    private static final String TOPIC = "inventory.commands";
    private static final TopicPartition P0 = new TopicPartition(TOPIC, 0);
    private static final TopicPartition P1 = new TopicPartition(TOPIC, 1);

    /**
     * A mock consumer whose commits can fail or trigger a rebalance, as a real one's can, and
     * which fetches the records at and after a seek again (MockConsumer hands each out once).
     */
    private static final class ScriptedConsumer extends MockConsumer<byte[], byte[]> {
        final List<ConsumerRecord<byte[], byte[]>> log = new ArrayList<>();
        final Map<TopicPartition, Long> commits = new ConcurrentHashMap<>(); // readable once closed
        volatile Consumer<Map<TopicPartition, OffsetAndMetadata>> onCommit = o -> {};

        ScriptedConsumer() {
            super("earliest");
        }

        @Override
        public synchronized void seek(TopicPartition partition, long offset) {
            super.seek(partition, offset);
            log.stream().filter(r -> r.partition() == partition.partition() && r.offset() >= offset)
                    .forEach(this::addRecord);
        }

        @Override
        public synchronized void commitSync(Map<TopicPartition, OffsetAndMetadata> offsets,
                Duration timeout) {
            onCommit.accept(offsets);
            super.commitSync(offsets);
            offsets.forEach((partition, offset) -> commits.put(partition, offset.offset()));
        }
    }

    private final ScriptedConsumer consumer = new ScriptedConsumer();
    private final MockProducer<byte[], byte[]> producer =
            new MockProducer<>(true, null, new ByteArraySerializer(), new ByteArraySerializer());
    private final List<String> handled = new ArrayList<>();

    /** Assigns both partitions and delivers these records on the first poll. */
    private void deliver(List<ConsumerRecord<byte[], byte[]>> records) {
        consumer.schedulePollTask(() -> {
            consumer.rebalance(List.of(P0, P1));
            consumer.updateBeginningOffsets(Map.of(P0, 0L, P1, 0L));
            consumer.log.addAll(records);
            records.forEach(consumer::addRecord);
        });
    }

    private ParticipantLoop loop(Handler handler) {
        Handler recording = cmd -> {
            handled.add(cmd.id());
            return handler.handle(cmd);
        };
        Processor processor = new Processor("/inventory", "dlq", List.of(new Registration(
                Phase.COMMAND, "inventory.reserve_stock", "inventory.stock_reserved", null, recording)),
                new InMemoryStore());
        return new ParticipantLoop(processor, List.of(TOPIC), Duration.ofMillis(10),
                () -> consumer, () -> producer);
    }

    private static final Handler OK = cmd -> Result.success(Map.of("reservation_id", "r"));

    @Test
    void aFailedCommitAbandonsTheBatchAndRewindsWhatIsStillOurs() throws Exception {
        deliver(List.of(record(0, 0), record(0, 1), record(0, 2), record(1, 0), record(1, 1)));
        AtomicInteger commits = new AtomicInteger();
        consumer.onCommit = offsets -> {
            if (commits.incrementAndGet() == 1) {
                throw new CommitFailedException();
            }
        };
        Map<TopicPartition, Long> positions = new HashMap<>();
        List<String> handledBeforePoll = new ArrayList<>();
        consumer.schedulePollTask(() -> {
            positions.put(P0, consumer.position(P0));
            positions.put(P1, consumer.position(P1));
            handledBeforePoll.addAll(handled);
        });
        ParticipantLoop loop = loop(OK);
        CompletableFuture<Void> running = CompletableFuture.runAsync(loop::run);
        // Every message is answered in the end (the first twice: again, from the store).
        awaitTrue(() -> producer.history().size() == 6);
        loop.stop();
        running.get(10, TimeUnit.SECONDS);
        assertEquals(1, handledBeforePoll.size(), "no handler ran after the failed commit: "
                + handledBeforePoll);
        TopicPartition first = handledBeforePoll.get(0).startsWith("p0") ? P0 : P1;
        assertEquals(0L, positions.get(first), "the uncommitted message is read again");
        assertEquals(0L, positions.get(first == P0 ? P1 : P0), "so is the untouched partition");
        assertEquals(3L, consumer.commits.get(P0));
        assertEquals(2L, consumer.commits.get(P1));
    }

    @Test
    void recordsOfAPartitionRevokedMeanwhileAreLeftToItsNextOwner() throws Exception {
        deliver(List.of(record(0, 0), record(0, 1), record(1, 0), record(1, 1)));
        // The first commit revokes the other partition, as the consumer's callbacks may.
        consumer.onCommit = offsets -> {
            if (consumer.assignment().size() == 2) {
                Set<TopicPartition> kept = new HashSet<>(offsets.keySet());
                consumer.rebalance(kept);
            }
        };
        ParticipantLoop loop = loop(OK);
        CompletableFuture<Void> running = CompletableFuture.runAsync(loop::run);
        awaitTrue(() -> producer.history().size() >= 2);
        // The next poll comes after the batch: by then every record it was going to handle ran.
        CountDownLatch batchDone = new CountDownLatch(1);
        consumer.schedulePollTask(batchDone::countDown);
        assertTrue(batchDone.await(10, TimeUnit.SECONDS));
        loop.stop();
        running.get(10, TimeUnit.SECONDS);
        assertEquals(2, handled.size(), "only the kept partition's records ran: " + handled);
        assertEquals(handled.get(0).substring(0, 2), handled.get(1).substring(0, 2));
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"AssertionError", "StackOverflowError"})
    void aHandlerErrorIsRetriedLikeAnException(String kind) throws Exception {
        deliver(List.of(record(0, 0)));
        AtomicInteger calls = new AtomicInteger();
        ParticipantLoop loop = loop(cmd -> {
            if (calls.incrementAndGet() == 1) {
                throw kind.equals("AssertionError") ? new AssertionError("bug") : new StackOverflowError();
            }
            return OK.handle(cmd);
        });
        CompletableFuture<Void> running = CompletableFuture.runAsync(loop::run);
        awaitTrue(() -> producer.history().size() == 1 || running.isDone());
        loop.stop();
        running.get(10, TimeUnit.SECONDS);
        assertEquals(2, calls.get());
        assertEquals(1, producer.history().size(), "answered once it succeeded");
        assertEquals(1L, consumer.commits.get(P0));
    }

    @Test
    void aBrokenJvmStillStopsTheLoop() {
        deliver(List.of(record(0, 0)));
        ParticipantLoop loop = loop(cmd -> {
            throw new OutOfMemoryError("test");
        });
        CompletableFuture<Void> running = CompletableFuture.runAsync(loop::run);
        Throwable thrown = assertThrows(ExecutionException.class, () -> running.get(10, TimeUnit.SECONDS));
        assertInstanceOf(OutOfMemoryError.class, thrown.getCause());
    }

    private static void awaitTrue(BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!condition.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out");
            Thread.sleep(5);
        }
    }

    /** A command record on partition {@code p}; its ce_id names where it is, e.g. p1@0. */
    private static ConsumerRecord<byte[], byte[]> record(int p, long offset) {
        Map<String, String> attributes = new LinkedHashMap<>();
        attributes.put("ce_specversion", "1.0");
        attributes.put("ce_id", "p" + p + "@" + offset);
        attributes.put("ce_source", "/sagaflow");
        attributes.put("ce_type", "inventory.reserve_stock");
        attributes.put("ce_sagaid", UUID.randomUUID().toString());
        attributes.put("ce_sagastep", "reserve_stock");
        attributes.put("ce_sagaattempt", "1");
        attributes.put("ce_sagaphase", "command");
        attributes.put("ce_sagareplyto", "orders.replies");
        attributes.put("ce_sagatoken", "t");
        RecordHeaders headers = new RecordHeaders();
        attributes.forEach((k, v) -> headers.add(k, v.getBytes(StandardCharsets.UTF_8)));
        return new ConsumerRecord<>(TOPIC, p, offset, 0L, TimestampType.CREATE_TIME, 0, 2, null,
                "{}".getBytes(StandardCharsets.UTF_8), headers, Optional.empty());
    }
}

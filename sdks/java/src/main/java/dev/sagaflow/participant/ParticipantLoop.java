package dev.sagaflow.participant;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;
import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InterruptException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Kafka side: poll, process one message at a time, produce, wait for the broker's ack,
 * commit. A failed message is not skipped: its partition is rewound to it and paused for the
 * backoff, while the other partitions go on. A rebalance abandons the rest of the batch.
 */
final class ParticipantLoop {
    private static final Logger LOG = LoggerFactory.getLogger(ParticipantLoop.class);
    // Short, so that a stop request is noticed quickly without waking the consumer up
    // (a wakeup could interrupt the commit of the message in hand).
    private static final Duration POLL = Duration.ofMillis(200);

    /** What became of one record. */
    private enum Handled { DONE, RETRY, REBALANCING }

    private final Processor processor;
    private final List<String> topics;
    private final Duration backoff;
    private final Supplier<Consumer<byte[], byte[]>> consumers;
    private final Supplier<Producer<byte[], byte[]>> producers;
    private final Map<TopicPartition, Long> pausedUntil = new HashMap<>();
    // Partitions revoked (or lost) since the last poll: their records in hand belong to their
    // next owner now, who reads them again from the committed offset.
    private final Set<TopicPartition> revoked = new HashSet<>();
    private volatile boolean stopping;

    ParticipantLoop(Processor processor, List<String> topics, Duration backoff,
            Supplier<Consumer<byte[], byte[]>> consumers,
            Supplier<Producer<byte[], byte[]>> producers) {
        this.processor = processor;
        this.topics = topics;
        this.backoff = backoff;
        this.consumers = consumers;
        this.producers = producers;
    }

    void stop() {
        stopping = true;
    }

    void run() {
        try (Producer<byte[], byte[]> producer = producers.get();
                Consumer<byte[], byte[]> consumer = consumers.get()) {
            consumer.subscribe(topics, new TrackRevocations());
            LOG.info("consuming {}", topics);
            while (!stopping) {
                resumeDue(consumer);
                ConsumerRecords<byte[], byte[]> records = poll(consumer);
                // Revocations inside poll() came before these records were fetched.
                revoked.clear();
                handleBatch(consumer, producer, records);
            }
            LOG.info("stopping: leaving the group and flushing the producer");
            producer.flush();
        }
    }

    private ConsumerRecords<byte[], byte[]> poll(Consumer<byte[], byte[]> consumer) {
        try {
            return consumer.poll(POLL);
        } catch (InterruptException e) {
            stopping = true;
            return ConsumerRecords.empty();
        } catch (KafkaException e) {
            // e.g. a subscribed topic that does not exist yet: log it and keep polling.
            LOG.warn("poll failed, polling on: {}", e.toString());
            sleep(backoff);
            return ConsumerRecords.empty();
        }
    }

    private void handleBatch(Consumer<byte[], byte[]> consumer, Producer<byte[], byte[]> producer,
            ConsumerRecords<byte[], byte[]> records) {
        List<TopicPartition> partitions = new ArrayList<>(records.partitions());
        for (int p = 0; p < partitions.size(); p++) {
            TopicPartition partition = partitions.get(p);
            List<ConsumerRecord<byte[], byte[]>> batch = records.records(partition);
            for (ConsumerRecord<byte[], byte[]> record : batch) {
                if (stopping || revoked.contains(partition)) {
                    // Left unhandled, they are read again from the committed offset: by us
                    // after a restart, or by the partition's next owner.
                    break;
                }
                Handled handled = handle(consumer, producer, record);
                if (handled == Handled.RETRY) {
                    // Tried again after the backoff; the partition does not move on meanwhile.
                    if (rewind(consumer, partition, record.offset())) {
                        consumer.pause(List.of(partition));
                        pausedUntil.put(partition, System.nanoTime() + backoff.toNanos());
                    }
                    break;
                }
                if (handled == Handled.REBALANCING) {
                    // Handling on would only delay the rebalance (or run handlers for partitions
                    // that are someone else's now): back to poll, which completes it. Partitions
                    // still ours restart from their first unhandled record.
                    rewind(consumer, partition, record.offset());
                    partitions.subList(p + 1, partitions.size()).forEach(rest ->
                            rewind(consumer, rest, records.records(rest).get(0).offset()));
                    return;
                }
            }
        }
    }

    /** Seeks a partition still ours back to {@code offset}; false when it is not ours any more. */
    private boolean rewind(Consumer<byte[], byte[]> consumer, TopicPartition partition, long offset) {
        if (revoked.contains(partition) || !consumer.assignment().contains(partition)) {
            return false;
        }
        consumer.seek(partition, offset);
        return true;
    }

    /** Processes, produces and commits one record. */
    private Handled handle(Consumer<byte[], byte[]> consumer, Producer<byte[], byte[]> producer,
            ConsumerRecord<byte[], byte[]> record) {
        String where = record.topic() + "/" + record.partition() + "@" + record.offset();
        try {
            Optional<OutboundRecord> out = processor.process(inbound(record));
            if (out.isPresent()) {
                // Blocks until the broker acknowledged (acks=all): only then may the offset move.
                producer.send(outbound(out.get())).get();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stopping = true;
            return Handled.RETRY;
        } catch (ExecutionException e) {
            LOG.warn("{}: producing the answer failed, trying again: {}", where, e.getCause().toString());
            return Handled.RETRY;
        } catch (Throwable e) {
            // A handler's Error (AssertionError, StackOverflowError...) is a failed message like
            // any exception; only a broken JVM (OutOfMemoryError...) stops the participant.
            if (e instanceof VirtualMachineError && !(e instanceof StackOverflowError)) {
                throw (VirtualMachineError) e;
            }
            LOG.warn("{}: processing failed (the store rolled back), trying again", where, e);
            return Handled.RETRY;
        }
        return commit(consumer, record, where);
    }

    private Handled commit(Consumer<byte[], byte[]> consumer, ConsumerRecord<byte[], byte[]> record,
            String where) {
        TopicPartition partition = new TopicPartition(record.topic(), record.partition());
        try {
            consumer.commitSync(Map.of(partition, new OffsetAndMetadata(record.offset() + 1)),
                    KafkaSettings.COMMIT_TIMEOUT);
            return Handled.DONE;
        } catch (CommitFailedException | RebalanceInProgressException e) {
            // Out of the group, or a rebalance under way: whoever owns the partition next reads
            // the message again and answers it from the store.
            LOG.warn("{}: commit failed in a rebalance, back to poll: {}", where, e.toString());
            return Handled.REBALANCING;
        } catch (InterruptException e) {
            stopping = true;
            return Handled.DONE;
        } catch (KafkaException e) {
            // e.g. a timeout: the next commit on this partition covers this offset too.
            LOG.warn("{}: commit failed: {}", where, e.toString());
            return Handled.DONE;
        }
    }

    private void resumeDue(Consumer<byte[], byte[]> consumer) {
        long now = System.nanoTime();
        pausedUntil.entrySet().removeIf(entry -> {
            if (now - entry.getValue() < 0) {
                return false;
            }
            if (consumer.assignment().contains(entry.getKey())) {
                consumer.resume(List.of(entry.getKey()));
            }
            return true;
        });
    }

    private static InboundMessage inbound(ConsumerRecord<byte[], byte[]> record) {
        List<Header> headers = new ArrayList<>();
        for (org.apache.kafka.common.header.Header h : record.headers()) {
            headers.add(new Header(h.key(), h.value() == null ? new byte[0] : h.value()));
        }
        return new InboundMessage(record.topic(), record.partition(), record.offset(),
                record.key(), headers, record.value());
    }

    private static ProducerRecord<byte[], byte[]> outbound(OutboundRecord out) {
        List<org.apache.kafka.common.header.Header> headers = out.headers().stream()
                .<org.apache.kafka.common.header.Header>map(h -> new RecordHeader(h.name(), h.value()))
                .toList();
        return new ProducerRecord<>(out.topic(), null, out.key(), out.value(), headers);
    }

    private void sleep(Duration duration) {
        try {
            Thread.sleep(duration.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stopping = true;
        }
    }

    /**
     * Revoked (or lost: the default onPartitionsLost calls this) partitions forget their pause and
     * their records in hand; a new owner starts from the committed offset.
     */
    private final class TrackRevocations implements ConsumerRebalanceListener {
        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            partitions.forEach(pausedUntil::remove);
            revoked.addAll(partitions);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            // nothing: consumption starts from the committed offset
        }
    }
}

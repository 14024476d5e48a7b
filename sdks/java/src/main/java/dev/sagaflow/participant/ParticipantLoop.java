package dev.sagaflow.participant;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InterruptException;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Kafka side: poll, process one message at a time, produce, wait for the broker's ack,
 * commit. A failed message is not skipped: its partition is rewound to it and paused for the
 * backoff, while the other partitions go on.
 */
final class ParticipantLoop {
    private static final Logger LOG = LoggerFactory.getLogger(ParticipantLoop.class);
    // Short, so that a stop request is noticed quickly without waking the consumer up
    // (a wakeup could interrupt the commit of the message in hand).
    private static final Duration POLL = Duration.ofMillis(200);

    private final Processor processor;
    private final List<String> topics;
    private final Duration backoff;
    private final Map<String, Object> consumerConfig;
    private final Map<String, Object> producerConfig;
    private final Map<TopicPartition, Long> pausedUntil = new HashMap<>();
    private volatile boolean stopping;

    ParticipantLoop(Processor processor, List<String> topics, Duration backoff,
            Map<String, Object> consumerConfig, Map<String, Object> producerConfig) {
        this.processor = processor;
        this.topics = topics;
        this.backoff = backoff;
        this.consumerConfig = consumerConfig;
        this.producerConfig = producerConfig;
    }

    void stop() {
        stopping = true;
    }

    void run() {
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerConfig);
                KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerConfig)) {
            consumer.subscribe(topics, new ForgetPauses());
            LOG.info("consuming {}", topics);
            while (!stopping) {
                resumeDue(consumer);
                ConsumerRecords<byte[], byte[]> records = poll(consumer);
                for (TopicPartition partition : records.partitions()) {
                    if (stopping) {
                        break;
                    }
                    handlePartition(consumer, producer, partition, records.records(partition));
                }
            }
            LOG.info("stopping: leaving the group and flushing the producer");
            producer.flush();
        }
    }

    private ConsumerRecords<byte[], byte[]> poll(KafkaConsumer<byte[], byte[]> consumer) {
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

    private void handlePartition(KafkaConsumer<byte[], byte[]> consumer,
            KafkaProducer<byte[], byte[]> producer, TopicPartition partition,
            List<ConsumerRecord<byte[], byte[]>> records) {
        for (ConsumerRecord<byte[], byte[]> record : records) {
            if (!handle(consumer, producer, record)) {
                // Tried again after the backoff; the partition does not move on meanwhile.
                consumer.seek(partition, record.offset());
                consumer.pause(List.of(partition));
                pausedUntil.put(partition, System.nanoTime() + backoff.toNanos());
                return;
            }
            if (stopping) {
                return;
            }
        }
    }

    /** Processes, produces and commits one record; false when it must be tried again. */
    private boolean handle(KafkaConsumer<byte[], byte[]> consumer,
            KafkaProducer<byte[], byte[]> producer, ConsumerRecord<byte[], byte[]> record) {
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
            return false;
        } catch (ExecutionException e) {
            LOG.warn("{}: producing the answer failed, trying again: {}", where, e.getCause().toString());
            return false;
        } catch (Exception e) {
            LOG.warn("{}: processing failed (the store rolled back), trying again", where, e);
            return false;
        }
        commit(consumer, record, where);
        return true;
    }

    private static void commit(KafkaConsumer<byte[], byte[]> consumer,
            ConsumerRecord<byte[], byte[]> record, String where) {
        TopicPartition partition = new TopicPartition(record.topic(), record.partition());
        try {
            consumer.commitSync(Map.of(partition, new OffsetAndMetadata(record.offset() + 1)));
        } catch (KafkaException e) {
            // Lost the partition in a rebalance: its next owner reads the message again and
            // answers it from the store.
            LOG.warn("{}: commit failed: {}", where, e.toString());
        }
    }

    private void resumeDue(KafkaConsumer<byte[], byte[]> consumer) {
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

    /** Revoked partitions forget their pause; a new owner starts from the committed offset. */
    private final class ForgetPauses implements ConsumerRebalanceListener {
        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            partitions.forEach(pausedUntil::remove);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            // nothing: consumption starts from the committed offset
        }
    }
}

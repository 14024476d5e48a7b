package dev.sagaflow.participant;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** The consumer and producer settings the contract requires; user overrides come last. */
final class KafkaSettings {
    /** The bound on one offset commit (instead of default.api.timeout.ms, 60 s). */
    static final Duration COMMIT_TIMEOUT = Duration.ofSeconds(10);
    /** What close() allows beyond the Kafka bounds: the store transaction, leaving the group. */
    static final Duration CLOSE_MARGIN = Duration.ofSeconds(5);

    private KafkaSettings() {}

    static Map<String, Object> consumer(String bootstrapServers, String groupId,
            Map<String, Object> overrides) {
        Map<String, Object> config = new HashMap<>();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
        config.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
        // The classic protocol: session.timeout.ms is a client setting only there.
        config.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Offsets are committed by hand, once the reply (or dead-letter copy) is acknowledged.
        config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        // Each record costs a store transaction, a produce awaited for acks=all and a commitSync:
        // a small batch keeps a poll well within max.poll.interval.ms and lets a rebalance (which
        // waits for the batch in hand under the eager range assignor) go through quickly.
        config.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10);
        config.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
        config.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 3_000);
        // Topics created after start-up are found within seconds, not the default five minutes.
        config.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 5_000);
        config.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, false);
        config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        config.putAll(overrides);
        return config;
    }

    static Map<String, Object> producer(String bootstrapServers, Map<String, Object> overrides) {
        Map<String, Object> config = new HashMap<>();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        config.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        // A missing reply topic fails the send in 10 s (then the message is retried), not 60 s.
        config.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10_000);
        // A send is acknowledged or failed within 25 s (delivery.timeout.ms below; Kafka's
        // default is 120 s), so that close() can wait for the message in hand (closeWait).
        config.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        config.putAll(overrides);
        if (!overrides.containsKey(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG)) {
            // A longer request.timeout.ms or linger.ms alone must not make the producer refuse
            // its configuration: stretch the delivery timeout to what Kafka requires.
            long least = millis(config, ProducerConfig.LINGER_MS_CONFIG, 5)
                    + millis(config, ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 30_000);
            config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, (int) Math.max(25_000, least));
        }
        return config;
    }

    /**
     * How long close() waits for the message in hand: the longest its produce can take
     * (max.block.ms for metadata, then delivery.timeout.ms), its commit, and a margin. Read from
     * the effective producer settings, so that overrides stay covered.
     */
    static Duration closeWait(Map<String, Object> producer) {
        return Duration.ofMillis(millis(producer, ProducerConfig.MAX_BLOCK_MS_CONFIG, 60_000)
                + millis(producer, ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 120_000))
                .plus(COMMIT_TIMEOUT).plus(CLOSE_MARGIN);
    }

    /** A duration setting given as a number or its text (as Kafka accepts); Kafka's default if unset. */
    private static long millis(Map<String, Object> config, String name, long kafkaDefault) {
        Object value = config.get(name);
        return value == null ? kafkaDefault : Long.parseLong(value.toString().trim());
    }
}

package dev.sagaflow.participant;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;

/**
 * A sagaflow participant: one handler per command and compensation type, served from Kafka.
 *
 * <pre>{@code
 * Participant participant = Participant.builder()
 *     .bootstrapServers("localhost:9092").groupId("payments").source("/payments")
 *     .topics("payments.commands")
 *     .onCommand("payments.authorize", "payments.authorized", "payments.declined",
 *         cmd -> Result.success(Map.of("authorization_id", "auth-1")))
 *     .build();
 * participant.run(); // until close() is called from another thread
 * }</pre>
 */
public final class Participant implements AutoCloseable {
    private final ParticipantLoop loop;
    private final Duration closeWait;
    private final CountDownLatch finished = new CountDownLatch(1);
    private volatile boolean running;

    private Participant(Builder b) {
        Processor processor = new Processor(b.source, b.deadLetterTopic, b.registrations, b.store);
        Map<String, Object> consumerConfig =
                KafkaSettings.consumer(b.bootstrapServers, b.groupId, b.consumerOverrides);
        Map<String, Object> producerConfig =
                KafkaSettings.producer(b.bootstrapServers, b.producerOverrides);
        this.closeWait = KafkaSettings.closeWait(producerConfig);
        this.loop = new ParticipantLoop(processor, List.copyOf(b.topics), b.retryBackoff,
                () -> new KafkaConsumer<>(consumerConfig), () -> new KafkaProducer<>(producerConfig));
    }

    public static Builder builder() {
        return new Builder();
    }

    /**
     * Consumes and answers commands on the calling thread until {@link #close()}: then finishes
     * the message in hand, commits it, leaves the group and flushes the producer.
     */
    public void run() {
        running = true;
        try {
            loop.run();
        } finally {
            running = false;
            finished.countDown();
        }
    }

    /**
     * Asks {@link #run()} to stop and waits until it has, at most as long as the message in hand
     * can take in Kafka: max.block.ms + delivery.timeout.ms + 10 s for the commit + 5 s (50 s with
     * the default settings). The handler's own time is not bounded here. Safe from any thread.
     */
    @Override
    public void close() {
        loop.stop();
        if (!running) {
            return;
        }
        try {
            finished.await(closeWait.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Builds a {@link Participant}; every setter returns the builder. */
    public static final class Builder {
        private String bootstrapServers = "localhost:9092";
        private String groupId;
        private String source;
        private String deadLetterTopic = "participants.dead-letter";
        private final List<String> topics = new ArrayList<>();
        private OutcomeStore store = new InMemoryStore();
        private Duration retryBackoff = Duration.ofSeconds(1);
        private final List<Registration> registrations = new ArrayList<>();
        private final Map<String, Object> consumerOverrides = new HashMap<>();
        private final Map<String, Object> producerOverrides = new HashMap<>();

        private Builder() {}

        /** Kafka's bootstrap servers; default {@code localhost:9092}. */
        public Builder bootstrapServers(String servers) {
            this.bootstrapServers = Objects.requireNonNull(servers);
            return this;
        }

        /** The participant's own consumer group; required. */
        public Builder groupId(String groupId) {
            this.groupId = Objects.requireNonNull(groupId);
            return this;
        }

        /** The {@code ce_source} of every reply, e.g. {@code /payments}; required. */
        public Builder source(String source) {
            this.source = Objects.requireNonNull(source);
            return this;
        }

        /** Where undecodable and unknown messages go; default {@code participants.dead-letter}. */
        public Builder deadLetterTopic(String topic) {
            this.deadLetterTopic = Objects.requireNonNull(topic);
            return this;
        }

        /** The command topics to consume; they need not exist yet. */
        public Builder topics(String... names) {
            topics.addAll(List.of(names));
            return this;
        }

        public Builder topics(List<String> names) {
            topics.addAll(names);
            return this;
        }

        /** Where outcomes are kept; default a fresh {@link InMemoryStore}. */
        public Builder store(OutcomeStore store) {
            this.store = Objects.requireNonNull(store);
            return this;
        }

        /** The pause before a message whose handler threw is tried again; default 1 s. */
        public Builder retryBackoff(Duration backoff) {
            this.retryBackoff = Objects.requireNonNull(backoff);
            return this;
        }

        /** Handles a command type; a success replies {@code successType}. */
        public Builder onCommand(String type, String successType, Handler handler) {
            return onCommand(type, successType, null, handler);
        }

        /**
         * Handles a command type; {@code refusalType} (a non-retryable failure type of the step)
         * answers a command that arrives after its step's compensation.
         */
        public Builder onCommand(String type, String successType, String refusalType,
                Handler handler) {
            registrations.add(new Registration(Phase.COMMAND, type, successType, refusalType, handler));
            return this;
        }

        /** Handles a compensation type; a success replies {@code successType}. */
        public Builder onCompensation(String type, String successType, Handler handler) {
            registrations.add(new Registration(Phase.COMPENSATION, type, successType, null, handler));
            return this;
        }

        /** Sets or overrides one KafkaConsumer property. */
        public Builder consumerProperty(String name, Object value) {
            consumerOverrides.put(name, value);
            return this;
        }

        /** Sets or overrides one KafkaProducer property. */
        public Builder producerProperty(String name, Object value) {
            producerOverrides.put(name, value);
            return this;
        }

        public Participant build() {
            Objects.requireNonNull(groupId, "groupId is required");
            Objects.requireNonNull(source, "source is required");
            if (topics.isEmpty()) {
                throw new IllegalStateException("no topics to consume");
            }
            if (registrations.isEmpty()) {
                throw new IllegalStateException("no handlers registered");
            }
            return new Participant(this);
        }
    }
}

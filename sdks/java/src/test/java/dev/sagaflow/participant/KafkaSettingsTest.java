package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.Map;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.junit.jupiter.api.Test;

class KafkaSettingsTest {

    @Test
    void consumerCommitsByHandFromTheEarliestOffsetWithAShortSession() {
        Map<String, Object> c = KafkaSettings.consumer("broker:9092", "payments", Map.of());
        assertEquals("broker:9092", c.get("bootstrap.servers"));
        assertEquals("payments", c.get("group.id"));
        assertEquals(false, c.get("enable.auto.commit"));
        assertEquals("earliest", c.get("auto.offset.reset"));
        assertEquals(10_000, c.get("session.timeout.ms"));
        assertEquals("classic", c.get("group.protocol"));
    }

    @Test
    void producerIsIdempotentAndWaitsForAllReplicas() {
        Map<String, Object> p = KafkaSettings.producer("broker:9092", Map.of());
        assertEquals("all", p.get("acks"));
        assertEquals(true, p.get("enable.idempotence"));
    }

    @Test
    void overridesComeLast() {
        Map<String, Object> c = KafkaSettings.consumer("b", "g", Map.of("session.timeout.ms", 20_000));
        assertEquals(20_000, c.get("session.timeout.ms"));
    }

    @Test
    void smallBatchesSoThatARebalanceNeedNotWaitLong() {
        assertEquals(10, KafkaSettings.consumer("b", "g", Map.of()).get("max.poll.records"));
    }

    @Test
    void aSendEndsWellWithinWhatCloseWaitsFor() {
        Map<String, Object> p = KafkaSettings.producer("127.0.0.1:1", Map.of());
        assertEquals(25_000, p.get("delivery.timeout.ms"));
        assertEquals(20_000, p.get("request.timeout.ms"));
        // max.block.ms 10 s + delivery.timeout.ms 25 s + commit 10 s + 5 s
        assertEquals(Duration.ofSeconds(50), KafkaSettings.closeWait(p));
        // Kafka refuses, at construction, a delivery.timeout.ms below linger.ms + request.timeout.ms.
        KafkaProducer<byte[], byte[]> accepted = new KafkaProducer<>(p);
        accepted.close(Duration.ZERO);
    }

    @Test
    void closeWaitFollowsOverriddenTimeouts() {
        Map<String, Object> p = KafkaSettings.producer("b",
                Map.of("delivery.timeout.ms", "120000", "max.block.ms", 60_000L));
        assertEquals(Duration.ofSeconds(60 + 120 + 10 + 5), KafkaSettings.closeWait(p));
        Map<String, Object> longRequests = KafkaSettings.producer("b", Map.of("request.timeout.ms", 30_000));
        assertEquals(30_000, longRequests.get("delivery.timeout.ms"), "stretched, not refused");
    }
}

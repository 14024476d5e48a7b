package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
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
}

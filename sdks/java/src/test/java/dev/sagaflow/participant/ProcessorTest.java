package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.opentelemetry.api.common.AttributeKey;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.sdk.testing.exporter.InMemorySpanExporter;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.SimpleSpanProcessor;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class ProcessorTest {
    private static InboundMessage command(String id) {
        return message("inventory.reserve_stock", "command", id, 1);
    }

    private static InboundMessage message(String type, String phase, String id, int attempt) {
        List<Header> headers = List.of(
                Header.utf8("ce_specversion", "1.0"), Header.utf8("ce_id", id),
                Header.utf8("ce_source", "/sagaflow"), Header.utf8("ce_type", type),
                Header.utf8("ce_sagaid", "019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b"),
                Header.utf8("ce_sagastep", "reserve_stock"), Header.utf8("ce_sagaattempt", "" + attempt),
                Header.utf8("ce_sagaphase", phase), Header.utf8("ce_sagareplyto", "orders.replies"),
                Header.utf8("ce_sagatoken", "t"));
        return new InboundMessage("inventory.commands", 0, 0, null, headers,
                "{}".getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void aThrowingHandlerStoresNothingAndTheSameMessageRunsItAgain() throws Exception {
        AtomicInteger calls = new AtomicInteger();
        Handler flaky = cmd -> {
            if (calls.incrementAndGet() == 1) {
                throw new IOException("database down");
            }
            return Result.success(Map.of("reservation_id", "r-1"));
        };
        Processor processor = new Processor("/inventory", "dlq", List.of(new Registration(
                Phase.COMMAND, "inventory.reserve_stock", "inventory.stock_reserved", null, flaky)),
                new InMemoryStore());
        assertThrows(IOException.class, () -> processor.process(command("c-1")));
        OutboundRecord reply = processor.process(command("c-1")).orElseThrow();
        assertEquals(2, calls.get());
        assertEquals("orders.replies", reply.topic());
        assertEquals("{\"reservation_id\":\"r-1\"}", new String(reply.value(), StandardCharsets.UTF_8));
    }

    @Test
    void aNewAttemptAfterARetryableFailureAndTheCompensationIsRefused() throws Exception {
        AtomicInteger calls = new AtomicInteger();
        Handler busy = cmd -> {
            calls.incrementAndGet();
            return Result.failure("inventory.unavailable", Map.of("error", "busy"), true);
        };
        Processor processor = new Processor("/inventory", "dlq", List.of(
                new Registration(Phase.COMMAND, "inventory.reserve_stock", "inventory.stock_reserved",
                        "inventory.out_of_stock", busy),
                new Registration(Phase.COMPENSATION, "inventory.release_stock", "inventory.stock_released",
                        null, cmd -> Result.success(Map.of("undone", true)))),
                new InMemoryStore());
        assertEquals("inventory.unavailable", type(processor.process(command("c-1")).orElseThrow()));
        OutboundRecord undo = processor.process(
                message("inventory.release_stock", "compensation", "k-1", 1)).orElseThrow();
        assertEquals("inventory.stock_released", type(undo));
        assertEquals("{}", new String(undo.value(), StandardCharsets.UTF_8), "nothing to undo");
        OutboundRecord late = processor.process(
                message("inventory.reserve_stock", "command", "c-2", 2)).orElseThrow();
        assertEquals("inventory.out_of_stock", type(late));
        assertEquals(1, calls.get(), "the handler never ran again");
    }

    @Test
    void deadLetteredMessagesGetAConsumerSpanToo() throws Exception {
        InMemorySpanExporter spans = InMemorySpanExporter.create();
        try (SdkTracerProvider provider = SdkTracerProvider.builder()
                .addSpanProcessor(SimpleSpanProcessor.create(spans)).build()) {
            Processor processor = new Processor("/inventory", "dlq", List.of(new Registration(
                    Phase.COMMAND, "inventory.reserve_stock", "inventory.stock_reserved", null,
                    cmd -> Result.success(Map.of()))), new InMemoryStore(),
                    new Tracing(() -> provider.get("test")));
            String parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            List<Header> unknown = new ArrayList<>(message("inventory.count_stock", "command", "c-1", 1).headers());
            unknown.add(Header.utf8("traceparent", parent));
            processor.process(new InboundMessage("inventory.commands", 0, 7, null, unknown, new byte[0]));
            processor.process(new InboundMessage("inventory.commands", 0, 8, null,
                    List.of(Header.utf8("traceparent", parent)), "not a command".getBytes(StandardCharsets.UTF_8)));

            List<SpanData> ended = spans.getFinishedSpanItems();
            assertEquals(2, ended.size(), "one span per dead-lettered message");
            for (SpanData span : ended) {
                assertEquals(SpanKind.CONSUMER, span.getKind());
                assertEquals(StatusCode.ERROR, span.getStatus().getStatusCode());
                assertEquals("4bf92f3577b34da6a3ce929d0e0e4736", span.getTraceId());
                assertEquals("00f067aa0ba902b7", span.getParentSpanId());
            }
            assertEquals("unknown command type `inventory.count_stock`",
                    ended.get(0).getAttributes().get(AttributeKey.stringKey("sagaflow.dead_letter.reason")));
        }
    }

    private static String type(OutboundRecord record) {
        return record.headers().stream().filter(h -> h.name().equals("ce_type"))
                .map(h -> new String(h.value(), StandardCharsets.UTF_8)).findFirst().orElseThrow();
    }

    @Test
    void libpqUrlsBecomeJdbcUrls() {
        PostgresUrl url = PostgresUrl.parse("postgres://app:s%40cret@db.local:5433/orders?sslmode=disable");
        assertEquals("jdbc:postgresql://db.local:5433/orders?sslmode=disable", url.jdbcUrl());
        assertEquals("app", url.user());
        assertEquals("s@cret", url.password());
        assertEquals("jdbc:postgresql://h/d", PostgresUrl.parse("jdbc:postgresql://h/d").jdbcUrl());
    }
}

package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Pattern;

/** Runs one protocol/vectors file against the message-processing function, as protocol/README.md says. */
final class VectorRunner {
    private static final Pattern RFC3339 = Pattern.compile("\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z");
    private static final Pattern UUID_TEXT = Pattern.compile(
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    /** JSON equality with numbers compared by value (74.97 == 74.970). */
    static final Comparator<JsonNode> JSON_VALUES = (a, b) -> {
        if (a.isNumber() && b.isNumber()) {
            return a.decimalValue().compareTo(b.decimalValue());
        }
        return a.equals(b) ? 0 : 1;
    };

    private final ScriptedHandler handler = new ScriptedHandler();
    private final Set<String> replyIds = new HashSet<>();
    private final Processor processor;

    VectorRunner(JsonNode participant, OutcomeStore store) {
        List<Registration> registrations = new ArrayList<>();
        for (JsonNode h : participant.get("handlers")) {
            Phase phase = Phase.fromWire(h.get("phase").asText()).orElseThrow();
            String refusal = h.hasNonNull("refusal") ? h.get("refusal").asText() : null;
            registrations.add(new Registration(phase, h.get("type").asText(), h.get("success").asText(),
                    refusal, handler));
        }
        processor = new Processor(participant.get("source").asText(),
                participant.get("dead_letter_topic").asText(), registrations, store);
    }

    void run(JsonNode vector) throws Exception {
        int index = 0;
        for (JsonNode step : vector.get("steps")) {
            String where = "step " + index++;
            handler.expect(step.get("handler"), where);
            Optional<OutboundRecord> out = processor.process(message(step.get("message")));
            handler.assertDone();
            JsonNode expect = step.get("expect");
            if (expect.has("reply")) {
                checkReply(where, expect.get("reply"), out.orElseThrow(() -> new AssertionError(where + ": no reply")));
            } else if (expect.has("dead_letter")) {
                checkDeadLetter(where, expect.get("dead_letter"),
                        out.orElseThrow(() -> new AssertionError(where + ": no dead-letter copy")));
            } else {
                assertTrue(expect.get("skip").asBoolean(), where);
                assertTrue(out.isEmpty(), where + ": expected nothing produced, got " + out);
            }
        }
    }

    private static InboundMessage message(JsonNode m) {
        List<Header> headers = new ArrayList<>();
        for (JsonNode pair : m.get("headers")) {
            headers.add(new Header(pair.get(0).asText(), bytes(pair.get(1))));
        }
        byte[] key = m.get("key").isNull() ? null : utf8(m.get("key").asText());
        return new InboundMessage(m.get("topic").asText(), m.get("partition").asInt(),
                m.get("offset").asLong(), key, headers, utf8(m.get("value").asText()));
    }

    private void checkReply(String where, JsonNode expected, OutboundRecord reply) {
        assertEquals(expected.get("topic").asText(), reply.topic(), where + " topic");
        assertEquals(expected.get("key").asText(), text(reply.key()), where + " key");
        Map<String, String> actual = new LinkedHashMap<>();
        for (Header h : reply.headers()) {
            String previous = actual.put(h.name().toLowerCase(Locale.ROOT), text(h.value()));
            assertNull(previous, where + ": header " + h.name() + " twice");
        }
        Set<String> names = new HashSet<>();
        expected.get("headers").fieldNames().forEachRemaining(n -> names.add(n.toLowerCase(Locale.ROOT)));
        expected.get("generated").fieldNames().forEachRemaining(n -> names.add(n.toLowerCase(Locale.ROOT)));
        assertEquals(names, actual.keySet(), where + " header names");
        expected.get("headers").properties().forEach(e -> assertEquals(e.getValue().asText(),
                actual.get(e.getKey().toLowerCase(Locale.ROOT)), where + " header " + e.getKey()));
        expected.get("generated").properties().forEach(e -> checkGenerated(where + " header " + e.getKey(),
                e.getValue().asText(), actual.get(e.getKey().toLowerCase(Locale.ROOT))));
        JsonNode body = parse(reply.value());
        assertTrue(expected.get("body").equals(JSON_VALUES, body), where + " body: " + body);
    }

    private void checkGenerated(String where, String kind, String value) {
        if (kind.equals("uuid")) {
            assertTrue(UUID_TEXT.matcher(value).matches(), where + ": not a UUID: " + value);
            assertTrue(replyIds.add(value), where + ": reply id repeated: " + value);
        } else if (kind.equals("rfc3339")) {
            assertTrue(RFC3339.matcher(value).matches(), where + ": not RFC 3339 millis: " + value);
        } else if (kind.startsWith("child_of:")) {
            String[] parent = kind.substring("child_of:".length()).split("-");
            String[] child = value.split("-");
            assertEquals(4, child.length, where + ": " + value);
            assertEquals("00", child[0], where);
            assertEquals(parent[1], child[1], where + ": trace id");
            assertTrue(child[2].matches("[0-9a-f]{16}") && !child[2].equals("0000000000000000"),
                    where + ": span id " + child[2]);
            assertNotEquals(parent[2], child[2], where + ": the parent's span id");
            assertEquals(parent[3], child[3], where + ": flags");
        } else {
            fail(where + ": unknown generated kind " + kind);
        }
    }

    private static void checkDeadLetter(String where, JsonNode expected, OutboundRecord copy) {
        assertEquals(expected.get("topic").asText(), copy.topic(), where + " topic");
        byte[] key = expected.get("key").isNull() ? null : utf8(expected.get("key").asText());
        assertTrue(Arrays.equals(key, copy.key()), where + " key");
        assertEquals(expected.get("value").asText(), text(copy.value()), where + " value");
        JsonNode headers = expected.get("headers");
        assertEquals(headers.size(), copy.headers().size(), where + " headers: " + copy.headers());
        for (int i = 0; i < headers.size(); i++) {
            JsonNode want = headers.get(i).get(1);
            Header got = copy.headers().get(i);
            assertEquals(headers.get(i).get(0).asText(), got.name(), where + " header " + i);
            if (want.has("prefix")) {
                assertTrue(text(got.value()).startsWith(want.get("prefix").asText()),
                        where + " " + got.name() + ": " + text(got.value()));
            } else {
                assertTrue(Arrays.equals(bytes(want), got.value()), where + " " + got);
            }
        }
    }

    private static byte[] bytes(JsonNode value) {
        return value.isTextual() ? utf8(value.asText()) : Base64.getDecoder().decode(value.get("base64").asText());
    }

    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] bytes) {
        return new String(bytes, StandardCharsets.UTF_8);
    }

    static JsonNode parse(byte[] bytes) {
        try {
            return Json.parse(bytes);
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    /** Checks each call against the step's {@code handler.call} and returns its {@code result}. */
    private static final class ScriptedHandler implements Handler {
        private JsonNode expected;
        private String where;
        private int calls;

        void expect(JsonNode handlerStep, String where) {
            this.expected = handlerStep == null || handlerStep.isNull() ? null : handlerStep;
            this.where = where;
            this.calls = 0;
        }

        void assertDone() {
            assertEquals(expected == null ? 0 : 1, calls, where + ": handler calls");
        }

        @Override
        public Result handle(Command command) {
            calls++;
            if (expected == null) {
                fail(where + ": the handler must not run, got " + command);
            }
            JsonNode call = expected.get("call");
            assertEquals(call.get("id").asText(), command.id(), where + " id");
            assertEquals(call.get("type").asText(), command.type(), where + " type");
            assertEquals(call.get("phase").asText(), command.phase().wireName(), where + " phase");
            assertEquals(call.get("saga_id").asText(), command.sagaId().toString(), where + " saga_id");
            assertEquals(call.get("definition").isNull() ? null : call.get("definition").asText(),
                    command.definition(), where + " definition");
            assertEquals(call.get("step").asText(), command.step(), where + " step");
            assertEquals(call.get("attempt").asInt(), command.attempt(), where + " attempt");
            assertEquals(call.get("reply_to").asText(), command.replyTo(), where + " reply_to");
            assertEquals(call.get("token").asText(), command.token(), where + " token");
            assertTrue(call.get("payload").equals(JSON_VALUES, command.payload()),
                    where + " payload " + command.payload());
            JsonNode result = expected.get("result");
            if (result.has("success")) {
                return Result.success(result.get("success"));
            }
            JsonNode failure = result.get("failure");
            return Result.failure(failure.get("type").asText(), failure.get("payload"),
                    failure.get("retryable").asBoolean());
        }
    }
}

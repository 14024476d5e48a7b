package dev.sagaflow.participant;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.regex.Pattern;

/**
 * Decodes the CloudEvents envelope of a command, binary or structured mode, into a {@link Command}
 * plus its trace context. Every failure is a {@link DecodeException} whose message is the
 * dead-letter reason protocol/README.md prescribes.
 */
final class Envelope {
    private static final String STRUCTURED = "application/cloudevents+json";
    private static final List<String> CORE = List.of("specversion", "id", "source", "type");
    private static final Pattern UUID_TEXT = Pattern.compile(
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");

    /**
     * A decoded command, the saga id and attempt as written (replies echo them verbatim) and the
     * W3C trace headers it carried (null when absent).
     */
    record Decoded(Command command, String sagaIdText, String attemptText, String traceparent,
            String tracestate) {}

    private Envelope() {}

    static Decoded decode(InboundMessage message) throws DecodeException {
        Map<String, String> headers = textHeaders(message.headers());
        String contentType = headers.get("content-type");
        if (contentType != null && contentType.startsWith(STRUCTURED)) {
            return decodeStructured(message, headers);
        }
        return decodeBinary(message, headers);
    }

    /** Lower-cased names to UTF-8 values, the first value of a repeated name winning. */
    private static Map<String, String> textHeaders(List<Header> headers) throws DecodeException {
        Map<String, String> text = new LinkedHashMap<>();
        for (Header header : headers) {
            String value = utf8(header);
            text.putIfAbsent(header.name().toLowerCase(Locale.ROOT), value);
        }
        return text;
    }

    private static String utf8(Header header) throws DecodeException {
        byte[] value = header.value() == null ? new byte[0] : header.value();
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(value))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new DecodeException("header `" + header.name() + "` is not valid UTF-8");
        }
    }

    private static Decoded decodeBinary(InboundMessage message, Map<String, String> headers)
            throws DecodeException {
        Map<String, String> attributes = new LinkedHashMap<>();
        headers.forEach((name, value) -> {
            if (name.startsWith("ce_")) {
                attributes.put(name.substring(3), value);
            }
        });
        byte[] body = message.value();
        // The body is read last: a message missing attributes is reported as such first.
        Command command = build(attributes, () -> body == null || body.length == 0
                ? NullNode.getInstance() : parseBody(body), message.headers());
        return new Decoded(command, attributes.get("sagaid"), attributes.get("sagaattempt"),
                headers.get("traceparent"), headers.get("tracestate"));
    }

    private static JsonNode parseBody(byte[] body) throws DecodeException {
        try {
            return Json.parse(body);
        } catch (JsonProcessingException e) {
            throw new DecodeException("body is not valid JSON: " + firstLine(e.getOriginalMessage()));
        } catch (IOException e) {
            throw new DecodeException("body is not valid JSON: " + firstLine(e.getMessage()));
        }
    }

    private static Decoded decodeStructured(InboundMessage message, Map<String, String> headers)
            throws DecodeException {
        JsonNode body = parseBody(message.value() == null ? new byte[0] : message.value());
        if (!(body instanceof ObjectNode event)) {
            throw new DecodeException("body is not valid JSON: a structured CloudEvent must be a JSON object");
        }
        Map<String, String> attributes = new LinkedHashMap<>();
        for (var field : event.properties()) {
            JsonNode value = field.getValue();
            if (field.getKey().equals("data") || value.isNull()) {
                continue;
            }
            if (CORE.contains(field.getKey()) && !value.isTextual()) {
                throw DecodeException.invalid(field.getKey(), "must be a string");
            }
            // Extensions may be numbers (sagaattempt: 1): read them as their JSON text.
            attributes.put(field.getKey(), value.isTextual() ? value.textValue() : value.toString());
        }
        JsonNode payload = event.has("data") ? event.get("data") : NullNode.getInstance();
        Command command = build(attributes, () -> payload, message.headers());
        String traceparent = attributes.getOrDefault("traceparent", headers.get("traceparent"));
        String tracestate = attributes.getOrDefault("tracestate", headers.get("tracestate"));
        return new Decoded(command, attributes.get("sagaid"), attributes.get("sagaattempt"),
                traceparent, tracestate);
    }

    /** Reads the payload once the attributes are known to be valid. */
    @FunctionalInterface
    private interface PayloadReader {
        JsonNode read() throws DecodeException;
    }

    private static Command build(Map<String, String> attrs, PayloadReader payload, List<Header> raw)
            throws DecodeException {
        String spec = require(attrs, "specversion");
        if (!spec.equals("1.0")) {
            throw new DecodeException("unsupported specversion `" + spec + "` (expected 1.0)");
        }
        String id = require(attrs, "id");
        require(attrs, "source");
        String type = require(attrs, "type");
        UUID sagaId = sagaId(require(attrs, "sagaid"));
        String step = require(attrs, "sagastep");
        int attempt = attempt(require(attrs, "sagaattempt"));
        String phaseText = require(attrs, "sagaphase");
        Phase phase = Phase.fromWire(phaseText).orElseThrow(() -> DecodeException.invalid(
                "sagaphase", "`" + phaseText + "` is neither `command` nor `compensation`"));
        String replyTo = require(attrs, "sagareplyto");
        String token = require(attrs, "sagatoken");
        return new Command(id, type, sagaId, attrs.get("sagadefinition"), step, attempt, phase,
                replyTo, token, payload.read(), raw, Optional.empty());
    }

    private static String require(Map<String, String> attrs, String name) throws DecodeException {
        String value = attrs.get(name);
        if (value == null) {
            throw DecodeException.missing(name);
        }
        return value;
    }

    private static UUID sagaId(String text) throws DecodeException {
        if (!UUID_TEXT.matcher(text).matches()) {
            throw DecodeException.invalid("sagaid", "`" + text + "` is not a UUID");
        }
        return UUID.fromString(text);
    }

    private static int attempt(String text) throws DecodeException {
        try {
            int attempt = Integer.parseInt(text);
            if (attempt >= 1) {
                return attempt;
            }
        } catch (NumberFormatException e) {
            // falls through to the common reason
        }
        throw DecodeException.invalid("sagaattempt", "`" + text + "` is not an integer >= 1");
    }

    private static String firstLine(String text) {
        if (text == null) {
            return "unreadable";
        }
        int newline = text.indexOf('\n');
        return newline < 0 ? text : text.substring(0, newline);
    }
}

package dev.sagaflow.participant;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.NullNode;
import java.io.IOException;
import java.io.UncheckedIOException;

/** The one shared ObjectMapper (thread-safe once configured). */
final class Json {
    static final ObjectMapper MAPPER = new ObjectMapper()
            // Numbers keep their exact text (74.97 stays 74.97), so payloads pass through unchanged.
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            // "{} trailing" is not one JSON value.
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private Json() {}

    static JsonNode toTree(Object value) {
        if (value == null) {
            return NullNode.getInstance();
        }
        return value instanceof JsonNode node ? node : MAPPER.valueToTree(value);
    }

    /** Parses one JSON value, throwing with the parser's message when it is not one. */
    static JsonNode parse(byte[] bytes) throws IOException {
        JsonNode node = MAPPER.readTree(bytes);
        if (node == null || node.isMissingNode()) {
            throw new IOException("no JSON value");
        }
        return node;
    }

    static JsonNode parse(String text) {
        try {
            return MAPPER.readTree(text);
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
    }

    static byte[] bytes(JsonNode node) {
        try {
            return MAPPER.writeValueAsBytes(node);
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
    }
}

package dev.sagaflow.participant;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/** Builds the records the participant produces: binary-mode replies and dead-letter copies. */
final class Replies {
    private static final DateTimeFormatter RFC3339_MILLIS =
            DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private Replies() {}

    /** The reply to {@code decoded} carrying {@code outcome}; saga attributes echo this message. */
    static OutboundRecord reply(String source, Envelope.Decoded decoded, Outcome outcome,
            String traceparent) {
        Command command = decoded.command();
        List<Header> headers = new ArrayList<>();
        headers.add(Header.utf8("ce_specversion", "1.0"));
        headers.add(Header.utf8("ce_id", UUID.randomUUID().toString()));
        headers.add(Header.utf8("ce_source", source));
        headers.add(Header.utf8("ce_type", outcome.replyType()));
        headers.add(Header.utf8("ce_time", RFC3339_MILLIS.format(Instant.now())));
        headers.add(Header.utf8("content-type", "application/json"));
        headers.add(Header.utf8("ce_sagaid", decoded.sagaIdText()));
        headers.add(Header.utf8("ce_sagastep", command.step()));
        headers.add(Header.utf8("ce_sagaattempt", decoded.attemptText()));
        headers.add(Header.utf8("ce_sagaphase", command.phase().wireName()));
        headers.add(Header.utf8("ce_sagatoken", command.token()));
        if (traceparent != null) {
            headers.add(Header.utf8("traceparent", traceparent));
        }
        if (decoded.tracestate() != null) {
            headers.add(Header.utf8("tracestate", decoded.tracestate()));
        }
        return new OutboundRecord(command.replyTo(), utf8(decoded.sagaIdText()), headers,
                Json.bytes(outcome.payload()));
    }

    /** The message unchanged (key, value, headers) plus the four dlq-* headers sagaflow uses. */
    static OutboundRecord deadLetter(String topic, InboundMessage message, String reason) {
        List<Header> headers = new ArrayList<>(message.headers());
        headers.add(Header.utf8("dlq-reason", reason));
        headers.add(Header.utf8("dlq-original-topic", message.topic()));
        headers.add(Header.utf8("dlq-original-partition", Integer.toString(message.partition())));
        headers.add(Header.utf8("dlq-original-offset", Long.toString(message.offset())));
        return new OutboundRecord(topic, message.key(), headers, message.value());
    }

    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }
}

package dev.sagaflow.participant;

import io.opentelemetry.api.GlobalOpenTelemetry;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.api.trace.SpanId;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import java.util.function.Supplier;

/**
 * The consumer span of one message, child of the command's {@code traceparent}, through the
 * OpenTelemetry API (whatever SDK the application installed, or none).
 */
final class Tracing {
    private static final Random RANDOM = new SecureRandom();
    private static final TextMapGetter<Map<String, String>> GETTER =
            (carrier, key) -> carrier == null ? null : carrier.get(key);

    /** The span, and the parent it continues (invalid when the command had no usable traceparent). */
    record Processing(Span span, SpanContext parent) {

        /** The reply's traceparent: same trace id and flags, this span's id; null without a parent. */
        String traceparent() {
            if (!parent.isValid()) {
                return null;
            }
            return "00-" + parent.getTraceId() + "-" + span.getSpanContext().getSpanId() + "-"
                    + parent.getTraceFlags().asHex();
        }
    }

    // Looked up per message, not once: the application may install its SDK after building us.
    private final Supplier<Tracer> tracer;

    Tracing(Supplier<Tracer> tracer) {
        this.tracer = tracer;
    }

    /** Spans through the globally installed OpenTelemetry. */
    static Tracing global() {
        return new Tracing(() -> GlobalOpenTelemetry.getTracer("dev.sagaflow.participant"));
    }

    Processing start(Command command, String traceparent, String tracestate) {
        Context parentContext = parent(traceparent, tracestate);
        SpanContext parent = Span.fromContext(parentContext).getSpanContext();
        Span span = tracer.get().spanBuilder(command.type() + " process")
                .setParent(parentContext)
                .setSpanKind(SpanKind.CONSUMER)
                .setAttribute("messaging.system", "kafka")
                .setAttribute("messaging.operation.type", "process")
                .setAttribute("messaging.message.id", command.id())
                .setAttribute("sagaflow.saga_id", command.sagaId().toString())
                .setAttribute("sagaflow.step", command.step())
                .startSpan();
        SpanContext own = span.getSpanContext();
        if (parent.isValid() && (!own.isValid() || own.getSpanId().equals(parent.getSpanId()))) {
            // No SDK: the no-op span just re-exposes the parent. Give the processing its own span
            // id under the command's trace, so the reply (and the handler's calls) still chain.
            span = Span.wrap(SpanContext.create(parent.getTraceId(), freshSpanId(),
                    parent.getTraceFlags(), parent.getTraceState()));
        }
        return new Processing(span, parent);
    }

    /**
     * The consumer span of a message that is dead-lettered (started; the caller ends it), child
     * of its trace context when it has a usable one. Marked as an error: it was not processed.
     */
    Span startDeadLetter(InboundMessage message, String traceparent, String tracestate,
            String reason) {
        return tracer.get().spanBuilder(message.topic() + " dead-letter")
                .setParent(parent(traceparent, tracestate))
                .setSpanKind(SpanKind.CONSUMER)
                .setAttribute("messaging.system", "kafka")
                .setAttribute("messaging.operation.type", "process")
                .setAttribute("messaging.destination.name", message.topic())
                .setAttribute("messaging.destination.partition.id", Integer.toString(message.partition()))
                .setAttribute("messaging.kafka.offset", message.offset())
                .setAttribute("sagaflow.dead_letter.reason", reason)
                .startSpan()
                .setStatus(StatusCode.ERROR, reason);
    }

    /** A header of a message that could not be decoded, read leniently; null when absent. */
    static String rawHeader(InboundMessage message, String name) {
        for (Header header : message.headers()) {
            if (header.name().equalsIgnoreCase(name) && header.value() != null) {
                return new String(header.value(), StandardCharsets.UTF_8);
            }
        }
        return null;
    }

    private static Context parent(String traceparent, String tracestate) {
        Map<String, String> carrier = new HashMap<>();
        if (traceparent != null) {
            carrier.put("traceparent", traceparent);
        }
        if (tracestate != null) {
            carrier.put("tracestate", tracestate);
        }
        return W3CTraceContextPropagator.getInstance().extract(Context.root(), carrier, GETTER);
    }

    private static String freshSpanId() {
        long id;
        do {
            id = RANDOM.nextLong();
        } while (id == 0);
        return SpanId.fromLong(id);
    }
}

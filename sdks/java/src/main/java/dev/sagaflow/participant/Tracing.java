package dev.sagaflow.participant;

import io.opentelemetry.api.GlobalOpenTelemetry;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.api.trace.SpanId;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;
import java.security.SecureRandom;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;

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

    private Tracing() {}

    static Processing start(Command command, String traceparent, String tracestate) {
        Map<String, String> carrier = new HashMap<>();
        if (traceparent != null) {
            carrier.put("traceparent", traceparent);
        }
        if (tracestate != null) {
            carrier.put("tracestate", tracestate);
        }
        Context parentContext = W3CTraceContextPropagator.getInstance()
                .extract(Context.root(), carrier, GETTER);
        SpanContext parent = Span.fromContext(parentContext).getSpanContext();
        Tracer tracer = GlobalOpenTelemetry.getTracer("dev.sagaflow.participant");
        Span span = tracer.spanBuilder(command.type() + " process")
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

    private static String freshSpanId() {
        long id;
        do {
            id = RANDOM.nextLong();
        } while (id == 0);
        return SpanId.fromLong(id);
    }
}

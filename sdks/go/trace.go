package participant

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const instrumentationName = "github.com/sagaflow/sagaflow/sdks/go"

var traceContext = propagation.TraceContext{}

// parentContext is the command's trace context, extracted from its traceparent/tracestate.
func parentContext(ctx context.Context, env envelope) context.Context {
	carrier := propagation.MapCarrier{}
	if env.traceparent != "" {
		carrier["traceparent"] = env.traceparent
	}
	if env.tracestate != "" {
		carrier["tracestate"] = env.tracestate
	}
	return traceContext.Extract(ctx, carrier)
}

// startSpan starts the consumer span of one message, a child of the command's trace.
func (p *Participant) startSpan(ctx context.Context, msg Message, env envelope) (context.Context, trace.Span) {
	return p.tracer.Start(parentContext(ctx, env), msg.Topic+" process",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Topic),
			attribute.String("messaging.message.id", env.cmd.ID),
			attribute.String("messaging.kafka.destination.partition", strconv.Itoa(int(msg.Partition))),
			attribute.Int64("messaging.kafka.offset", msg.Offset),
			attribute.String("sagaflow.saga_id", env.cmd.SagaID),
			attribute.String("sagaflow.step", env.cmd.Step),
			attribute.String("sagaflow.phase", string(env.cmd.Phase)),
		))
}

// replyTraceparent is the reply's traceparent: the command's trace id and flags with the span
// id of our processing span. Without an OpenTelemetry SDK the no-op tracer hands back the
// parent's span context, so the reply then gets a fresh random span id instead; never the
// command's own. It is "" when the command had no valid traceparent.
func replyTraceparent(spanCtx context.Context, env envelope) string {
	parent := trace.SpanContextFromContext(parentContext(context.Background(), env))
	if !parent.IsValid() {
		return ""
	}
	own := trace.SpanContextFromContext(spanCtx)
	spanID := own.SpanID()
	if !own.IsValid() || own.TraceID() != parent.TraceID() || spanID == parent.SpanID() {
		spanID = freshSpanID(parent.SpanID())
	}
	// The flags are copied as sent: the propagator keeps only the sampled bit.
	parts := strings.Split(env.traceparent, "-")
	flags := parts[len(parts)-1]
	return "00-" + parent.TraceID().String() + "-" + spanID.String() + "-" + strings.ToLower(flags)
}

// freshSpanID returns a random valid span id other than the parent's.
func freshSpanID(not trace.SpanID) trace.SpanID {
	for {
		var id trace.SpanID
		_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on supported platforms
		if id.IsValid() && id != not {
			return id
		}
	}
}

package participant

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// fixedTracer stands in for an OpenTelemetry SDK: its spans are children of the context's span
// with a known span id.
type fixedTracer struct {
	embedded.Tracer
	spanID trace.SpanID
	parent trace.SpanContext // the parent seen by Start
}

type fixedProvider struct {
	embedded.TracerProvider
	tracer *fixedTracer
}

func (p fixedProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return p.tracer }

func (f *fixedTracer) Start(ctx context.Context, _ string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	f.parent = trace.SpanContextFromContext(ctx)
	ctx = trace.ContextWithSpanContext(ctx, f.parent.WithSpanID(f.spanID))
	return ctx, trace.SpanFromContext(ctx)
}

// With an SDK installed, the reply's traceparent carries the span id of the library's own
// consumer span, which is a child of the command's traceparent.
func TestReplyCarriesTheProcessingSpan(t *testing.T) {
	tracer := &fixedTracer{spanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}}
	p := New(Config{Source: "/payments", TracerProvider: fixedProvider{tracer: tracer}})
	p.Register(Registration{Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
		Handler: func(context.Context, Command) (Result, error) { return Success(nil), nil }})
	msg := testMessage(PhaseCommand, "payments.authorize", 1, 0)
	msg.Headers = append(msg.Headers,
		Header{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03")})
	out, err := p.Process(context.Background(), msg)
	if err != nil || out.Record == nil {
		t.Fatalf("%+v, %v", out, err)
	}
	if got := tracer.parent.SpanID().String(); got != "b7ad6b7169203331" {
		t.Errorf("span parent %s, want the command's span", got)
	}
	want := "00-0af7651916cd43dd8448eb211c80319c-0102030405060708-03" // flags copied as sent
	if got := headerValue(out.Record.Headers, "traceparent"); got != want {
		t.Errorf("traceparent %s, want %s", got, want)
	}
}

// countingTracer counts the spans started and ended.
type countingTracer struct {
	embedded.Tracer
	started, ended int
}

type countedSpan struct {
	trace.Span
	t *countingTracer
}

func (s countedSpan) End(...trace.SpanEndOption) { s.t.ended++ }

func (c *countingTracer) Start(ctx context.Context, _ string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	c.started++
	return ctx, countedSpan{Span: trace.SpanFromContext(ctx), t: c}
}

type countingProvider struct {
	embedded.TracerProvider
	tracer *countingTracer
}

func (p countingProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return p.tracer }

// Dead-lettered messages get their consumer span too (a span per message).
func TestDeadLetteredMessagesAreTraced(t *testing.T) {
	tracer := &countingTracer{}
	p := New(Config{Source: "/payments", TracerProvider: countingProvider{tracer: tracer}})
	unknown := testMessage(PhaseCommand, "payments.unknown", 1, 0)
	undecodable := Message{Topic: "payments.commands", Value: []byte("not json")}
	for _, msg := range []Message{unknown, undecodable} {
		if out, err := p.Process(context.Background(), msg); err != nil || out.DeadLetter == "" {
			t.Fatalf("%+v, %v; want a dead-letter copy", out, err)
		}
	}
	if tracer.started != 2 || tracer.ended != 2 {
		t.Fatalf("%d spans started, %d ended; want 2 and 2", tracer.started, tracer.ended)
	}
}

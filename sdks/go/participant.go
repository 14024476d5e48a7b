package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// DefaultDeadLetterTopic is where messages that cannot be commands go unless configured.
const DefaultDeadLetterTopic = "participants.dead-letter"

// Config configures a Participant.
type Config struct {
	Source          string               // ce_source of every reply, e.g. "/payments" (required)
	DeadLetterTopic string               // default DefaultDeadLetterTopic
	Store           Store                // default a new MemoryStore
	Logger          *slog.Logger         // default slog.Default()
	TracerProvider  trace.TracerProvider // default otel.GetTracerProvider()
}

// Participant answers the commands and compensations of the handlers registered on it.
type Participant struct {
	cfg          Config
	tracer       trace.Tracer
	handlers     map[handlerKey]Registration
	successTypes map[string]bool // reply types that mean a command succeeded
}

type handlerKey struct {
	phase Phase
	typ   string
}

// New returns a Participant without handlers; register them before Run or Process. It panics
// without a Source, like Register on a malformed registration.
func New(cfg Config) *Participant {
	if cfg.Source == "" {
		panic("participant: Config.Source is required (the ce_source of replies)")
	}
	if cfg.DeadLetterTopic == "" {
		cfg.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	return &Participant{
		cfg:          cfg,
		tracer:       cfg.TracerProvider.Tracer(instrumentationName),
		handlers:     map[handlerKey]Registration{},
		successTypes: map[string]bool{},
	}
}

// Register adds the handler of one (phase, type). It panics on a malformed or duplicate
// registration: that is a programming error, found at start-up.
func (p *Participant) Register(r Registration) {
	switch {
	case r.Phase != PhaseCommand && r.Phase != PhaseCompensation:
		panic(fmt.Sprintf("participant: unknown phase %q", r.Phase))
	case r.Type == "" || r.Success == "" || r.Handler == nil:
		panic("participant: a registration needs Type, Success and Handler")
	case r.Refusal != "" && r.Phase != PhaseCommand:
		panic("participant: only commands have a refusal type")
	}
	key := handlerKey{r.Phase, r.Type}
	if _, dup := p.handlers[key]; dup {
		panic(fmt.Sprintf("participant: %s type %q registered twice", r.Phase, r.Type))
	}
	p.handlers[key] = r
	if r.Phase == PhaseCommand {
		p.successTypes[r.Success] = true
	}
}

// Output is what Process decided to produce for one message.
type Output struct {
	// Record is the reply or the dead-letter copy; nil when nothing is produced (skip).
	Record *Record
	// DeadLetter is the dlq-reason when Record is a dead-letter copy, "" otherwise.
	DeadLetter string
}

// Process is the library's pure message-processing function: from a record read from Kafka to
// the record to produce. It decodes, dead-letters, decides under the store's lock, calls the
// handler when the decision table says so, and stores the outcome. An error (the handler's, or
// the store's) means that nothing was stored and nothing must be produced: try again later.
func (p *Participant) Process(ctx context.Context, msg Message) (Output, error) {
	env, err := decode(msg)
	if de := (*decodeError)(nil); errors.As(err, &de) {
		return p.deadLetter(ctx, msg, env, de.reason), nil
	}
	reg, ok := p.handlers[handlerKey{env.cmd.Phase, env.cmd.Type}]
	if !ok {
		reason := fmt.Sprintf("unknown %s type `%s`", env.cmd.Phase, env.cmd.Type)
		return p.deadLetter(ctx, msg, env, reason), nil
	}
	ctx, span := p.startSpan(ctx, msg, env)
	defer span.End()

	// The lock key uses the canonical UUID text, as the PostgreSQL store's hash does.
	sagaKey := uuid.MustParse(env.cmd.SagaID).String()
	var reply *Outcome
	err = p.cfg.Store.Atomically(ctx, sagaKey, env.cmd.Step, func(ctx context.Context, stored Outcomes) (*Save, error) {
		var save *Save
		var err error
		reply, save, err = p.decide(ctx, env, reg, stored)
		return save, err
	})
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return Output{}, err
	}
	if reply == nil {
		return Output{}, nil
	}
	rec := p.replyRecord(env, *reply, replyTraceparent(ctx, env))
	return Output{Record: &rec}, nil
}

// deadLetter is the Output of a message that cannot be handled: its dead-letter copy, under a
// consumer span of its own like every message (env holds what could be decoded, if anything).
func (p *Participant) deadLetter(ctx context.Context, msg Message, env envelope, reason string) Output {
	if env.traceparent == "" {
		// Undecodable: the trace context, if any, is still in the record's headers.
		for _, h := range msg.Headers {
			switch h.Key {
			case "traceparent":
				env.traceparent = string(h.Value)
			case "tracestate":
				env.tracestate = string(h.Value)
			}
		}
	}
	_, span := p.startSpan(ctx, msg, env)
	defer span.End()
	span.SetStatus(codes.Error, "dead-lettered: "+reason)
	rec := p.deadLetterRecord(msg, reason)
	return Output{Record: &rec, DeadLetter: reason}
}

package participant

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// testMessage is a binary-mode command like the vectors' (without trace context).
func testMessage(phase Phase, typ string, attempt int, offset int64) Message {
	id := fmt.Sprintf("%s-%d", phase, attempt)
	h := [][2]string{
		{"ce_specversion", "1.0"}, {"ce_id", id}, {"ce_source", "/sagaflow"}, {"ce_type", typ},
		{"ce_sagaid", testSaga}, {"ce_sagastep", "authorize_payment"},
		{"ce_sagaattempt", fmt.Sprint(attempt)}, {"ce_sagaphase", string(phase)},
		{"ce_sagareplyto", "replies"}, {"ce_sagatoken", "tok-" + id},
	}
	msg := Message{Topic: "payments.commands", Offset: offset, Value: []byte(`{"amount":1}`)}
	for _, kv := range h {
		msg.Headers = append(msg.Headers, Header{Key: kv[0], Value: []byte(kv[1])})
	}
	return msg
}

func TestHandlerErrorStoresNothingAndIsRetried(t *testing.T) {
	calls := 0
	p := New(Config{Source: "/payments"})
	p.Register(Registration{Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
		Handler: func(context.Context, Command) (Result, error) {
			calls++
			if calls == 1 {
				return Result{}, errors.New("database down")
			}
			return Success(map[string]string{"authorization_id": "a"}), nil
		}})
	msg := testMessage(PhaseCommand, "payments.authorize", 1, 0)
	if out, err := p.Process(context.Background(), msg); err == nil || out.Record != nil {
		t.Fatalf("got %+v, %v; want an error and nothing to produce", out, err)
	}
	out, err := p.Process(context.Background(), msg)
	if err != nil || out.Record == nil || string(out.Record.Value) != `{"authorization_id":"a"}` {
		t.Fatalf("retry: got %+v, %v", out, err)
	}
	if calls != 2 {
		t.Fatalf("handler called %d times, want 2", calls)
	}
}

// Beyond the vectors: a new attempt after a retryable failure is not run once the step was
// compensated (obligation 5 wins over "evaluate afresh").
func TestNewAttemptAfterCompensationIsRefused(t *testing.T) {
	calls := 0
	p := New(Config{Source: "/payments"})
	p.Register(Registration{Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
		Refusal: "payments.declined", Handler: func(context.Context, Command) (Result, error) {
			calls++
			return Failure("payments.gateway_timeout", map[string]string{"error": "busy"}, true), nil
		}})
	p.Register(Registration{Phase: PhaseCompensation, Type: "payments.void_authorization",
		Success: "payments.authorization_voided", Handler: func(context.Context, Command) (Result, error) {
			t.Fatal("the compensation of a failed command must not run")
			return Result{}, nil
		}})
	steps := []struct {
		msg      Message
		wantType string
	}{
		{testMessage(PhaseCommand, "payments.authorize", 1, 0), "payments.gateway_timeout"},
		{testMessage(PhaseCompensation, "payments.void_authorization", 1, 1), "payments.authorization_voided"},
		{testMessage(PhaseCommand, "payments.authorize", 2, 2), "payments.declined"},
	}
	for i, s := range steps {
		out, err := p.Process(context.Background(), s.msg)
		if err != nil || out.Record == nil {
			t.Fatalf("step %d: %+v, %v", i, out, err)
		}
		if got := headerValue(out.Record.Headers, "ce_type"); got != s.wantType {
			t.Fatalf("step %d: reply %s, want %s", i, got, s.wantType)
		}
	}
	if calls != 1 {
		t.Fatalf("command handler called %d times, want 1", calls)
	}
}

func headerValue(headers []Header, name string) string {
	for _, h := range headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// A panicking handler is an error: nothing stored or sent (its work rolled back with the
// PostgreSQL store), the process goes on, and the message is handled on the next try.
func TestHandlerPanicIsRetried(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"memory":   func(*testing.T) Store { return NewMemoryStore() },
		"postgres": func(t *testing.T) Store { return freshPostgresStore(t) },
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			calls := 0
			p := New(Config{Source: "/payments", Store: store(t)})
			p.Register(Registration{Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
				Handler: func(ctx context.Context, _ Command) (Result, error) {
					calls++
					// The same row twice fails unless the panicking call's work was rolled back.
					if tx := Tx(ctx); tx != nil {
						if _, err := tx.Exec(ctx, "INSERT INTO sagaflow_participant_outcomes VALUES ($1, 'other', 'command', 'x', 'y', '{}', false)", testSaga); err != nil {
							return Result{}, err
						}
					}
					if calls == 1 {
						panic("nil map")
					}
					return Success(nil), nil
				}})
			msg := testMessage(PhaseCommand, "payments.authorize", 1, 0)
			if out, err := p.Process(context.Background(), msg); err == nil || out.Record != nil {
				t.Fatalf("got %+v, %v; want an error and nothing to produce", out, err)
			}
			out, err := p.Process(context.Background(), msg)
			if err != nil || out.Record == nil || headerValue(out.Record.Headers, "ce_type") != "payments.authorized" {
				t.Fatalf("retry: got %+v, %v", out, err)
			}
		})
	}
}

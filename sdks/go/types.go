package participant

import (
	"context"
	"encoding/json"
)

// Phase says whether a message asks to do a step (command) or to undo it (compensation).
type Phase string

// The two phases, spelled as in the ce_sagaphase header.
const (
	PhaseCommand      Phase = "command"
	PhaseCompensation Phase = "compensation"
)

// Header is one Kafka record header; Value holds the raw bytes, which need not be UTF-8.
type Header struct {
	Key   string
	Value []byte
}

// Message is a record as read from Kafka: the input of Participant.Process.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte // nil for a record without a key
	Headers   []Header
	Value     []byte
}

// Record is a record to produce: a reply or a dead-letter copy.
type Record struct {
	Topic   string
	Key     []byte
	Headers []Header
	Value   []byte
}

// Command is a decoded command or compensation, as a handler receives it.
type Command struct {
	ID         string // ce_id, the command id
	Type       string // ce_type
	Phase      Phase
	SagaID     string
	Definition string // ce_sagadefinition, "" when absent
	Step       string
	Attempt    int
	ReplyTo    string
	Token      string
	Payload    json.RawMessage // the body; "null" when the body was empty
	Headers    []Header        // the record's headers, unchanged
}

// Decode unmarshals the command's payload into v.
func (c Command) Decode(v any) error { return json.Unmarshal(c.Payload, v) }

// Result is what a handler decided: a success, or a failure of a declared failure type.
type Result struct {
	failure   bool
	replyType string // only for failures: the success type comes from the registration
	payload   any
	retryable bool
}

// Success is a handler's successful result; payload is marshalled to JSON as the reply body.
func Success(payload any) Result { return Result{payload: payload} }

// Failure is a handler's refusal: nothing was done. replyType must be one of the step's failure
// types and retryable must be what the step's definition says of it; the library uses retryable
// only to decide whether a new attempt of the command is evaluated afresh.
func Failure(replyType string, payload any, retryable bool) Result {
	return Result{failure: true, replyType: replyType, payload: payload, retryable: retryable}
}

// Handler does the work of one command or compensation type. Returning an error (or panicking)
// means "not now": the store is rolled back, nothing is sent and the same message is tried again
// after a backoff.
type Handler func(ctx context.Context, cmd Command) (Result, error)

// Registration binds a handler to a (phase, type).
type Registration struct {
	Phase   Phase
	Type    string // the ce_type handled
	Success string // the reply type of a success
	// Refusal (commands only, optional) is a non-retryable failure type, sent when the command
	// arrives after its compensation. Without it such a command gets no reply.
	Refusal string
	Handler Handler
}

package participant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

const structuredContentType = "application/cloudevents+json"

// envelope is a decoded message: the command plus what the reply copies verbatim.
type envelope struct {
	cmd         Command
	attemptText string // ce_sagaattempt as received (an integer member as its decimal string)
	traceparent string
	tracestate  string
}

// decodeError is why a message cannot be a command; its text becomes the dlq-reason header.
type decodeError struct{ reason string }

func (e *decodeError) Error() string { return e.reason }

func reject(format string, args ...any) error {
	return &decodeError{reason: fmt.Sprintf(format, args...)}
}

func missing(attr string) error { return reject("missing CloudEvents attribute `%s`", attr) }

func invalid(attr, why string) error { return reject("attribute `%s` is invalid: %s", attr, why) }

// headerMap lowercases names and keeps the first value of a repeated name. Values are checked
// for UTF-8 first, on every header, as sagaflow does with replies.
func headerMap(headers []Header) (map[string]string, error) {
	m := make(map[string]string, len(headers))
	for _, h := range headers {
		if !utf8.Valid(h.Value) {
			return nil, reject("header `%s` is not valid UTF-8", h.Key)
		}
		name := strings.ToLower(h.Key)
		if _, seen := m[name]; !seen {
			m[name] = string(h.Value)
		}
	}
	return m, nil
}

// decode reads a command in binary or structured mode. The order of the checks follows
// sagaflow's own decoder (src/messaging/envelope.rs) so that a message with several faults
// gets the same reason everywhere.
func decode(msg Message) (envelope, error) {
	h, err := headerMap(msg.Headers)
	if err != nil {
		return envelope{}, err
	}
	var attrs map[string]string
	var env envelope
	if strings.HasPrefix(h["content-type"], structuredContentType) {
		attrs, env.cmd.Payload, err = structuredAttrs(msg.Value)
	} else {
		attrs, env.cmd.Payload, err = binaryAttrs(h, msg.Value)
	}
	if err != nil {
		return envelope{}, err
	}
	if err := fillCommand(&env, attrs); err != nil {
		return envelope{}, err
	}
	env.cmd.Headers = msg.Headers
	env.traceparent, env.tracestate = attrs["traceparent"], attrs["tracestate"]
	if env.traceparent == "" {
		// Structured mode may carry the trace context as Kafka headers too.
		env.traceparent, env.tracestate = h["traceparent"], h["tracestate"]
	}
	return env, nil
}

// binaryAttrs maps ce_* headers to attribute names; the body is the JSON payload.
func binaryAttrs(h map[string]string, body []byte) (map[string]string, json.RawMessage, error) {
	spec, ok := h["ce_specversion"]
	if !ok {
		return nil, nil, missing("specversion")
	}
	if spec != "1.0" {
		return nil, nil, reject("unsupported specversion `%s` (expected 1.0)", spec)
	}
	payload := json.RawMessage("null")
	if len(body) > 0 {
		if err := strictJSON(body); err != nil {
			return nil, nil, reject("body is not valid JSON: %v", err)
		}
		payload = append(json.RawMessage(nil), body...)
	}
	attrs := make(map[string]string, len(h))
	for name, value := range h {
		if attr, ok := strings.CutPrefix(name, "ce_"); ok {
			attrs[attr] = value
		}
	}
	attrs["traceparent"], attrs["tracestate"] = h["traceparent"], h["tracestate"]
	return attrs, payload, nil
}

// structuredAttrs reads the event object: core attributes must be strings, sagaattempt may be
// an integer, data is the payload (data_base64 is not read).
func structuredAttrs(body []byte) (map[string]string, json.RawMessage, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil || members == nil {
		return nil, nil, reject("body is not valid JSON: a structured CloudEvent must be a JSON object")
	}
	attrs := make(map[string]string, len(members))
	for _, name := range []string{"specversion", "id", "source", "type"} {
		raw, ok := members[name]
		if !ok || isNull(raw) {
			return nil, nil, missing(name)
		}
		if err := json.Unmarshal(raw, new(string)); err != nil {
			return nil, nil, invalid(name, "must be a string")
		}
	}
	for name, raw := range members {
		if name == "data" || name == "data_base64" || isNull(raw) {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			attrs[name] = s
		} else if name == "sagaattempt" {
			attrs[name] = string(bytes.TrimSpace(raw)) // an integer; validated with the others
		} else if _, saga := sagaAttrs[name]; saga {
			return nil, nil, invalid(name, "must be a string")
		}
	}
	if attrs["specversion"] != "1.0" {
		return nil, nil, reject("unsupported specversion `%s` (expected 1.0)", attrs["specversion"])
	}
	payload, ok := members["data"]
	if !ok {
		payload = json.RawMessage("null")
	}
	return attrs, payload, nil
}

// sagaAttrs are the extension attributes a command must (or may) carry as strings.
var sagaAttrs = map[string]struct{}{
	"sagaid": {}, "sagadefinition": {}, "sagastep": {}, "sagaphase": {}, "sagareplyto": {},
	"sagatoken": {}, "traceparent": {}, "tracestate": {},
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// strictJSON checks that body is exactly one JSON value.
func strictJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing characters after the JSON value")
	}
	return nil
}

// fillCommand checks the attributes every command needs, in sagaflow's order, and fills env.
func fillCommand(env *envelope, attrs map[string]string) error {
	for _, attr := range []string{"id", "source", "type", "sagaid", "sagastep", "sagaattempt",
		"sagaphase", "sagareplyto", "sagatoken"} {
		if _, ok := attrs[attr]; !ok {
			return missing(attr)
		}
	}
	if _, err := uuid.Parse(attrs["sagaid"]); err != nil {
		return invalid("sagaid", err.Error())
	}
	attempt, err := strconv.Atoi(attrs["sagaattempt"])
	if err != nil || attempt < 1 {
		return invalid("sagaattempt", fmt.Sprintf("`%s` is not an integer >= 1", attrs["sagaattempt"]))
	}
	phase := Phase(attrs["sagaphase"])
	if phase != PhaseCommand && phase != PhaseCompensation {
		return invalid("sagaphase", fmt.Sprintf("`%s` is neither `command` nor `compensation`", phase))
	}
	env.attemptText = attrs["sagaattempt"]
	env.cmd.ID, env.cmd.Type, env.cmd.Phase = attrs["id"], attrs["type"], phase
	env.cmd.SagaID, env.cmd.Definition, env.cmd.Step = attrs["sagaid"], attrs["sagadefinition"], attrs["sagastep"]
	env.cmd.Attempt, env.cmd.ReplyTo, env.cmd.Token = attempt, attrs["sagareplyto"], attrs["sagatoken"]
	return nil
}

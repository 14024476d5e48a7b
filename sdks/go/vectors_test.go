package participant

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// vectorsDir is the shared test vectors of the participant libraries, read in place.
const vectorsDir = "../../protocol/vectors"

type vector struct {
	Description string `json:"description"`
	Participant struct {
		Source          string `json:"source"`
		DeadLetterTopic string `json:"dead_letter_topic"`
		Handlers        []struct {
			Phase, Type, Success, Refusal string
		} `json:"handlers"`
	} `json:"participant"`
	Steps []vectorStep `json:"steps"`
}

type vectorStep struct {
	Message struct {
		Topic     string          `json:"topic"`
		Partition int32           `json:"partition"`
		Offset    int64           `json:"offset"`
		Key       *string         `json:"key"`
		Headers   [][2]headerText `json:"headers"`
		Value     string          `json:"value"`
	} `json:"message"`
	Handler *struct {
		Call   map[string]json.RawMessage `json:"call"`
		Result struct {
			Success *json.RawMessage `json:"success"`
			Failure *struct {
				Type      string          `json:"type"`
				Payload   json.RawMessage `json:"payload"`
				Retryable bool            `json:"retryable"`
			} `json:"failure"`
		} `json:"result"`
	} `json:"handler"`
	Expect struct {
		Reply *struct {
			Topic     string            `json:"topic"`
			Key       string            `json:"key"`
			Headers   map[string]string `json:"headers"`
			Generated map[string]string `json:"generated"`
			Body      json.RawMessage   `json:"body"`
		} `json:"reply"`
		DeadLetter *struct {
			Topic   string          `json:"topic"`
			Key     *string         `json:"key"`
			Value   string          `json:"value"`
			Headers [][2]headerText `json:"headers"`
		} `json:"dead_letter"`
		Skip bool `json:"skip"`
	} `json:"expect"`
}

// headerText is a header name or value of a vector: a string, {"base64": …} for bytes that are
// not UTF-8, or (expected dead-letter values only) {"prefix": …}.
type headerText struct {
	bytes  []byte
	prefix bool
}

func (h *headerText) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		h.bytes = []byte(s)
		return nil
	}
	var obj struct{ Base64, Prefix *string }
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	if obj.Prefix != nil {
		h.bytes, h.prefix = []byte(*obj.Prefix), true
		return nil
	}
	var err error
	h.bytes, err = base64.StdEncoding.DecodeString(*obj.Base64)
	return err
}

func loadVectors(t *testing.T) map[string]vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(vectorsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", vectorsDir, err)
	}
	out := map[string]vector{}
	for _, f := range files {
		var v vector
		if err := json.Unmarshal(mustRead(t, f), &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = v
	}
	return out
}

// vectorRun feeds one vector to Process with the given store.
type vectorRun struct {
	t     *testing.T
	step  *vectorStep
	calls int
	ids   map[string]bool           // every reply ce_id so far, which must all differ
	onTx  func(ctx context.Context) // checks the handler's context (the PostgreSQL run)
}

func runVector(t *testing.T, v vector, store Store, onTx func(context.Context)) {
	r := &vectorRun{t: t, ids: map[string]bool{}, onTx: onTx}
	p := New(Config{Source: v.Participant.Source, DeadLetterTopic: v.Participant.DeadLetterTopic, Store: store})
	for _, h := range v.Participant.Handlers {
		p.Register(Registration{Phase: Phase(h.Phase), Type: h.Type, Success: h.Success,
			Refusal: h.Refusal, Handler: r.handle})
	}
	for i := range v.Steps {
		r.step, r.calls = &v.Steps[i], 0
		out, err := p.Process(context.Background(), r.message())
		if err != nil {
			t.Fatalf("step %d: Process: %v", i, err)
		}
		want := 0
		if r.step.Handler != nil {
			want = 1
		}
		if r.calls != want {
			t.Fatalf("step %d: handler called %d times, want %d", i, r.calls, want)
		}
		r.check(i, out)
	}
}

func (r *vectorRun) message() Message {
	m := r.step.Message
	msg := Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Value: []byte(m.Value)}
	if m.Key != nil {
		msg.Key = []byte(*m.Key)
	}
	for _, h := range m.Headers {
		msg.Headers = append(msg.Headers, Header{Key: string(h[0].bytes), Value: h[1].bytes})
	}
	return msg
}

// handle is the handler of every registration: it checks the call and returns the step's result.
func (r *vectorRun) handle(ctx context.Context, cmd Command) (Result, error) {
	r.calls++
	if r.step.Handler == nil {
		r.t.Fatalf("handler called for %s %s, but the step expects no call", cmd.Phase, cmd.Type)
	}
	if r.onTx != nil {
		r.onTx(ctx)
	}
	got := map[string]any{"id": cmd.ID, "type": cmd.Type, "phase": cmd.Phase, "saga_id": cmd.SagaID,
		"definition": cmd.Definition, "step": cmd.Step, "attempt": cmd.Attempt,
		"reply_to": cmd.ReplyTo, "token": cmd.Token, "payload": cmd.Payload}
	for name, want := range r.step.Handler.Call {
		gotJSON, _ := json.Marshal(got[name])
		if !jsonEqual(gotJSON, want) {
			r.t.Errorf("call %s = %s, want %s", name, gotJSON, want)
		}
	}
	res := r.step.Handler.Result
	if f := res.Failure; f != nil {
		return Failure(f.Type, f.Payload, f.Retryable), nil
	}
	return Success(*res.Success), nil
}

func (r *vectorRun) check(i int, out Output) {
	t, e := r.t, r.step.Expect
	switch {
	case e.Skip:
		if out.Record != nil {
			t.Fatalf("step %d: want skip, got a record to %s", i, out.Record.Topic)
		}
	case e.DeadLetter != nil:
		checkDeadLetter(t, i, out, e.DeadLetter.Topic, e.DeadLetter.Key, e.DeadLetter.Value, e.DeadLetter.Headers)
	case e.Reply != nil:
		if out.Record == nil || out.DeadLetter != "" {
			t.Fatalf("step %d: want a reply, got %+v", i, out)
		}
		rec, want := out.Record, e.Reply
		if rec.Topic != want.Topic || string(rec.Key) != want.Key {
			t.Errorf("step %d: reply to %s key %s, want %s key %s", i, rec.Topic, rec.Key, want.Topic, want.Key)
		}
		if !jsonEqual(rec.Value, want.Body) {
			t.Errorf("step %d: body %s, want %s", i, rec.Value, want.Body)
		}
		r.checkReplyHeaders(i, rec.Headers, want.Headers, want.Generated)
	default:
		t.Fatalf("step %d: unknown expectation", i)
	}
}

func checkDeadLetter(t *testing.T, i int, out Output, topic string, key *string, value string, headers [][2]headerText) {
	rec := out.Record
	if rec == nil || out.DeadLetter == "" {
		t.Fatalf("step %d: want a dead-letter copy, got %+v", i, out)
	}
	if rec.Topic != topic || string(rec.Value) != value || (key == nil) != (rec.Key == nil) ||
		(key != nil && *key != string(rec.Key)) {
		t.Errorf("step %d: dead letter %s/%q/%q, want %s/%v/%q", i, rec.Topic, rec.Key, rec.Value, topic, key, value)
	}
	if len(rec.Headers) != len(headers) {
		t.Fatalf("step %d: %d dead-letter headers, want %d", i, len(rec.Headers), len(headers))
	}
	for j, want := range headers {
		got := rec.Headers[j]
		ok := got.Key == string(want[0].bytes) && (bytes.Equal(got.Value, want[1].bytes) ||
			want[1].prefix && bytes.HasPrefix(got.Value, want[1].bytes))
		if !ok {
			t.Errorf("step %d: dead-letter header %d = %s: %q, want %s: %q", i, j, got.Key, got.Value, want[0].bytes, want[1].bytes)
		}
	}
}

var rfc3339Millis = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func (r *vectorRun) checkReplyHeaders(i int, got []Header, fixed, generated map[string]string) {
	t := r.t
	seen := map[string]string{}
	for _, h := range got {
		name := strings.ToLower(h.Key)
		if _, dup := seen[name]; dup {
			t.Errorf("step %d: reply header %s repeated", i, name)
		}
		seen[name] = string(h.Value)
	}
	if len(seen) != len(fixed)+len(generated) {
		t.Errorf("step %d: reply headers %v, want %v plus %v", i, seen, fixed, generated)
	}
	for name, want := range fixed {
		if seen[strings.ToLower(name)] != want {
			t.Errorf("step %d: header %s = %q, want %q", i, name, seen[strings.ToLower(name)], want)
		}
	}
	for name, kind := range generated {
		value, ok := seen[strings.ToLower(name)]
		if !ok || !r.generatedOK(kind, value) {
			t.Errorf("step %d: header %s = %q, want %s", i, name, value, kind)
		}
	}
}

var childTraceparent = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

func (r *vectorRun) generatedOK(kind, value string) bool {
	switch {
	case kind == "uuid":
		_, err := uuid.Parse(value)
		fresh := !r.ids[value]
		r.ids[value] = true
		return err == nil && fresh
	case kind == "rfc3339":
		return rfc3339Millis.MatchString(value)
	case strings.HasPrefix(kind, "child_of:"):
		parent := strings.Split(strings.TrimPrefix(kind, "child_of:"), "-")
		m := childTraceparent.FindStringSubmatch(value)
		return m != nil && m[1] == parent[1] && m[2] != strings.Repeat("0", 16) && m[2] != parent[2] && m[3] == parent[3]
	}
	return false
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

func TestVectorsMemoryStore(t *testing.T) {
	vectors := loadVectors(t)
	for _, name := range sortedNames(vectors) {
		t.Run(name, func(t *testing.T) { runVector(t, vectors[name], NewMemoryStore(), nil) })
	}
}

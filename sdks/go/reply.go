package participant

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// replyRecord builds the binary-mode reply to env carrying outcome o.
func (p *Participant) replyRecord(env envelope, o Outcome, traceparent string) Record {
	cmd := env.cmd
	h := []Header{
		{"ce_specversion", []byte("1.0")},
		{"ce_id", []byte(uuid.NewString())}, // new for every reply, repeats included
		{"ce_source", []byte(p.cfg.Source)},
		{"ce_type", []byte(o.ReplyType)},
		{"ce_time", []byte(time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))},
		{"content-type", []byte("application/json")},
		{"ce_sagaid", []byte(cmd.SagaID)},
		{"ce_sagastep", []byte(cmd.Step)},
		{"ce_sagaattempt", []byte(env.attemptText)},
		{"ce_sagaphase", []byte(cmd.Phase)},
		{"ce_sagatoken", []byte(cmd.Token)},
	}
	if traceparent != "" {
		h = append(h, Header{"traceparent", []byte(traceparent)})
	}
	if env.tracestate != "" {
		h = append(h, Header{"tracestate", []byte(env.tracestate)})
	}
	return Record{Topic: cmd.ReplyTo, Key: []byte(cmd.SagaID), Headers: h, Value: o.Payload}
}

// deadLetterRecord copies msg unchanged to the dead-letter topic with sagaflow's four headers.
func (p *Participant) deadLetterRecord(msg Message, reason string) Record {
	h := make([]Header, 0, len(msg.Headers)+4)
	h = append(h, msg.Headers...)
	h = append(h,
		Header{"dlq-reason", []byte(reason)},
		Header{"dlq-original-topic", []byte(msg.Topic)},
		Header{"dlq-original-partition", []byte(strconv.Itoa(int(msg.Partition)))},
		Header{"dlq-original-offset", []byte(strconv.FormatInt(msg.Offset, 10))},
	)
	return Record{Topic: p.cfg.DeadLetterTopic, Key: msg.Key, Headers: h, Value: msg.Value}
}

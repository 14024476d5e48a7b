package participant

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fakeClient records what handling a batch asks of the Kafka client.
type fakeClient struct {
	committed []string // "partition@offset"
	produced  int
	rewound   map[string]map[int32]kgo.EpochOffset
	paused    map[int32]bool
}

func (f *fakeClient) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	f.produced += len(rs)
	return kgo.ProduceResults{{Record: rs[0]}}
}

func (f *fakeClient) CommitRecords(_ context.Context, rs ...*kgo.Record) error {
	for _, r := range rs {
		f.committed = append(f.committed, fmt.Sprintf("%d@%d", r.Partition, r.Offset))
	}
	return nil
}

func (f *fakeClient) SetOffsets(o map[string]map[int32]kgo.EpochOffset) { f.rewound = o }

func (f *fakeClient) PauseFetchPartitions(tps map[string][]int32) map[string][]int32 {
	for _, p := range tps["payments.commands"] {
		f.paused[p] = true
	}
	return nil
}

func (f *fakeClient) ResumeFetchPartitions(tps map[string][]int32) {
	for _, p := range tps["payments.commands"] {
		delete(f.paused, p)
	}
}

func (f *fakeClient) AllowRebalance() {}

// batchRecord is a command of its own step, so that each record runs the handler.
func batchRecord(partition int32, offset int64) *kgo.Record {
	msg := testMessage(PhaseCommand, "payments.authorize", 1, offset)
	r := &kgo.Record{Topic: msg.Topic, Partition: partition, Offset: offset, Value: msg.Value}
	for _, h := range msg.Headers {
		if h.Key == "ce_sagastep" {
			h.Value = fmt.Appendf(nil, "step-%d-%d", partition, offset)
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return r
}

func batchConsumer(t *testing.T, fail map[string]bool, ran *[]string) (*consumer, *fakeClient) {
	t.Helper()
	p := New(Config{Source: "/payments"})
	p.Register(Registration{Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
		Handler: func(_ context.Context, cmd Command) (Result, error) {
			*ran = append(*ran, cmd.Step)
			if fail[cmd.Step] {
				return Result{}, errors.New("database down")
			}
			return Success(nil), nil
		}})
	c := newConsumer(p, KafkaConfig{MinBackoff: time.Second, MaxBackoff: 4 * time.Second})
	fc := &fakeClient{paused: map[int32]bool{}}
	c.cl = fc
	return c, fc
}

// A failing record stops only its partition: it is rewound to that record and paused for a
// backoff, its later records are not handled and nothing past it is committed, and the other
// partition goes on. Once the backoff is over the partition is resumed.
func TestFailingRecordPausesOnlyItsPartition(t *testing.T) {
	var ran []string
	fail := map[string]bool{"step-0-1": true}
	c, fc := batchConsumer(t, fail, &ran)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }

	c.handleBatch(context.Background(), []*kgo.Record{
		batchRecord(0, 0), batchRecord(1, 0), batchRecord(0, 1), batchRecord(1, 1), batchRecord(0, 2),
	})
	if want := "[step-0-0 step-1-0 step-0-1 step-1-1]"; fmt.Sprint(ran) != want {
		t.Fatalf("handled %v, want %s (each once, nothing after the failure)", ran, want)
	}
	if want := "[0@0 1@0 1@1]"; fmt.Sprint(fc.committed) != want {
		t.Fatalf("committed %v, want %s", fc.committed, want)
	}
	if got := fc.rewound["payments.commands"]; len(got) != 1 || got[0].Offset != 1 {
		t.Fatalf("rewound %v, want partition 0 to offset 1", fc.rewound)
	}
	if !fc.paused[0] || fc.paused[1] {
		t.Fatalf("paused %v, want partition 0 only", fc.paused)
	}
	if due := c.resumeDue(); !due.Equal(now.Add(time.Second)) || !fc.paused[0] {
		t.Fatalf("due %v, paused %v: want partition 0 paused for the first backoff", due, fc.paused)
	}

	// The same record fails again after the backoff: the next one is twice as long.
	now = now.Add(time.Second)
	if due := c.resumeDue(); !due.IsZero() || fc.paused[0] {
		t.Fatalf("due %v, paused %v: want partition 0 resumed", due, fc.paused)
	}
	c.handleBatch(context.Background(), []*kgo.Record{batchRecord(0, 1), batchRecord(0, 2)})
	if due := c.resumeDue(); !due.Equal(now.Add(2 * time.Second)) {
		t.Fatalf("second backoff due %v, want 2s", due)
	}

	now = now.Add(2 * time.Second)
	c.resumeDue()
	fail["step-0-1"] = false
	c.handleBatch(context.Background(), []*kgo.Record{batchRecord(0, 1), batchRecord(0, 2)})
	if want := "[0@0 1@0 1@1 0@1 0@2]"; fmt.Sprint(fc.committed) != want {
		t.Fatalf("committed %v, want %s", fc.committed, want)
	}
	if len(c.retries) != 0 {
		t.Fatalf("retries left: %v", c.retries)
	}
}

// A rebalance waiting for the batch stops it before the next record: nothing more is handled
// or committed, and each partition is rewound to its first unhandled record.
func TestWaitingRebalanceStopsTheBatch(t *testing.T) {
	var ran []string
	c, fc := batchConsumer(t, map[string]bool{}, &ran)
	first := batchRecord(0, 5)
	// The signal arrives while the first record is being handled.
	c.p.handlers[handlerKey{PhaseCommand, "payments.authorize"}] = Registration{
		Phase: PhaseCommand, Type: "payments.authorize", Success: "payments.authorized",
		Handler: func(_ context.Context, cmd Command) (Result, error) {
			ran = append(ran, cmd.Step)
			c.rebalanceWaits()
			return Success(nil), nil
		}}
	c.handleBatch(context.Background(), []*kgo.Record{first, batchRecord(1, 7), batchRecord(0, 6)})
	if fmt.Sprint(ran) != "[step-0-5]" || fmt.Sprint(fc.committed) != "[0@5]" {
		t.Fatalf("handled %v, committed %v; want only the first record", ran, fc.committed)
	}
	got := fc.rewound["payments.commands"]
	if len(got) != 2 || got[0].Offset != 6 || got[1].Offset != 7 {
		t.Fatalf("rewound %v, want partition 0 to 6 and 1 to 7", fc.rewound)
	}
	c.allowRebalance()
	if c.rebalancePending.Load() {
		t.Fatal("the signal outlives the rebalance it announced")
	}
}

package participant

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The consumer and producer settings the protocol requires (docs/protocol.md, "Consumer settings").
func TestKafkaSettings(t *testing.T) {
	p := New(Config{Source: "/test"})
	cl, err := kgo.NewClient(p.kafkaOptions(KafkaConfig{
		Brokers: []string{"127.0.0.1:1"}, GroupID: "g", Topics: []string{"a.commands", "b.commands"},
	}, func() {})...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	checks := []struct {
		opt  any
		want any
	}{
		{kgo.ConsumerGroup, "g"},
		{kgo.DisableAutoCommit, true},
		{kgo.SessionTimeout, 10 * time.Second},
		{kgo.RequiredAcks, kgo.AllISRAcks()},
		{kgo.DisableIdempotentWrite, false},
		{kgo.AllowAutoTopicCreation, false},
		{kgo.BlockRebalanceOnPoll, true},
		{kgo.FetchMaxWait, time.Second},
	}
	for _, c := range checks {
		if got := cl.OptValue(c.opt); got != c.want {
			t.Errorf("%T option = %v, want %v", c.opt, got, c.want)
		}
	}
	if got := cl.OptValue(kgo.ConsumeResetOffset).(kgo.Offset); got.String() != kgo.NewOffset().AtStart().String() {
		t.Errorf("reset offset = %v, want the start (auto.offset.reset=earliest)", got)
	}
	if topics := cl.OptValue(kgo.ConsumeTopics).([]string); len(topics) != 2 {
		t.Errorf("topics = %v", topics)
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	b := newBackoff(100*time.Millisecond, 300*time.Millisecond)
	var got []time.Duration
	for range 4 {
		got = append(got, b.step())
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
}

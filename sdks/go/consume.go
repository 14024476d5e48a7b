package participant

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// recordClient is the part of *kgo.Client that handling a polled batch uses (a fake in tests).
type recordClient interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
	CommitRecords(ctx context.Context, rs ...*kgo.Record) error
	SetOffsets(map[string]map[int32]kgo.EpochOffset)
	PauseFetchPartitions(map[string][]int32) map[string][]int32
	ResumeFetchPartitions(map[string][]int32)
	AllowRebalance()
}

type topicPartition struct {
	topic     string
	partition int32
}

// retry is a partition whose record at offset failed: the partition is paused until resumeAt.
type retry struct {
	offset   int64
	backoff  *backoff
	resumeAt time.Time
	paused   bool
}

// consumer is the state of Run between polls. Only the polling goroutine touches it, except
// rebalancePending, which franz-go sets from its own goroutine.
type consumer struct {
	p       *Participant
	cl      recordClient
	cfg     KafkaConfig
	now     func() time.Time
	retries map[topicPartition]*retry
	// rebalancePending: a rebalance waits for this batch (BlockRebalanceOnPoll). franz-go runs
	// OnPartitionsRevoked and OnPartitionsLost only after AllowRebalance, so they cannot mark
	// revoked partitions mid-batch; this flag is what stops the batch before the next record,
	// so that no record is handled after its partition has moved (the coordinator kicks a
	// member that keeps a rebalance waiting longer than the rebalance timeout).
	rebalancePending atomic.Bool
}

func newConsumer(p *Participant, cfg KafkaConfig) *consumer {
	return &consumer{p: p, cfg: cfg, now: time.Now, retries: map[topicPartition]*retry{}}
}

// rebalanceWaits is franz-go's OnPartitionsCallbackBlocked signal.
func (c *consumer) rebalanceWaits() { c.rebalancePending.Store(true) }

func (c *consumer) allowRebalance() {
	c.rebalancePending.Store(false)
	c.cl.AllowRebalance()
}

// handleBatch handles the polled records in order, each once, committing each after its reply
// (or dead-letter copy) is acknowledged. A failing record stops its own partition only: the
// partition is rewound to it and paused for a backoff, and its later records in the batch are
// left for a later poll, so nothing is committed past an unanswered record while the other
// partitions go on. A stop or a waiting rebalance leaves the rest of the batch, rewound, for
// whoever owns each partition next. A record being handled is finished either way (the work
// context ignores the stop).
func (c *consumer) handleBatch(ctx context.Context, records []*kgo.Record) {
	work := context.WithoutCancel(ctx)
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for _, r := range records {
		tp := topicPartition{r.Topic, r.Partition}
		if _, left := rewind[r.Topic][r.Partition]; left {
			continue
		}
		if ctx.Err() != nil || c.rebalancePending.Load() {
			addRewind(rewind, r)
			continue
		}
		if err := c.p.processAndProduce(work, c.cl, r); err != nil {
			c.p.cfg.Logger.Error("message not handled; its partition will retry it after a backoff",
				"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			addRewind(rewind, r)
			c.pause(tp, r.Offset)
			continue
		}
		delete(c.retries, tp)
		if err := c.cl.CommitRecords(work, r); err != nil {
			// Not fatal: the message is read again and answered from the store.
			c.p.cfg.Logger.Warn("commit failed", "topic", r.Topic, "partition", r.Partition,
				"offset", r.Offset, "err", err)
		}
	}
	// Before AllowRebalance, as franz-go asks: the partitions are still ours.
	c.cl.SetOffsets(rewind)
}

func addRewind(rewind map[string]map[int32]kgo.EpochOffset, r *kgo.Record) {
	if rewind[r.Topic] == nil {
		rewind[r.Topic] = map[int32]kgo.EpochOffset{}
	}
	rewind[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
}

// pause stops fetching tp until its backoff is over. The backoff doubles while the same record
// keeps failing, and starts afresh for another one.
func (c *consumer) pause(tp topicPartition, offset int64) {
	rt := c.retries[tp]
	if rt == nil || rt.offset != offset {
		rt = &retry{offset: offset, backoff: newBackoff(c.cfg.MinBackoff, c.cfg.MaxBackoff)}
		c.retries[tp] = rt
	}
	rt.resumeAt = c.now().Add(rt.backoff.step())
	rt.paused = true
	c.cl.PauseFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
}

// resumeDue resumes the partitions whose backoff is over and returns when the next one is due
// (zero when none is paused).
func (c *consumer) resumeDue() time.Time {
	now := c.now()
	var next time.Time
	resume := map[string][]int32{}
	for tp, rt := range c.retries {
		switch {
		case !rt.paused:
		case !now.Before(rt.resumeAt):
			rt.paused = false
			resume[tp.topic] = append(resume[tp.topic], tp.partition)
		case next.IsZero() || rt.resumeAt.Before(next):
			next = rt.resumeAt
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	return next
}

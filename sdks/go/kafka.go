package participant

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig says where Run consumes from. The consumer and producer settings that the
// protocol requires are not configurable; Options may add others (TLS, SASL, client id).
type KafkaConfig struct {
	Brokers []string // bootstrap servers
	GroupID string   // this participant's own consumer group, shared by its replicas
	Topics  []string // command and compensation topics; subscribed even before they exist
	// MinBackoff and MaxBackoff bound the wait before a message whose handling failed is tried
	// again (doubling from Min to Max). Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	Options                []kgo.Opt
}

// Settings the protocol asks for (docs/protocol.md, "Consumer settings").
const (
	sessionTimeout   = 10 * time.Second
	rebalanceTimeout = 5 * time.Minute // the max.poll.interval.ms of other clients
	// metadataMaxAge bounds how long a topic created after start-up goes unnoticed.
	metadataMaxAge  = 10 * time.Second
	deliveryTimeout = 30 * time.Second
	pollBatch       = 100
)

// kafkaOptions are the client options of Run: its own group, earliest reset, no automatic
// commits, idempotent producer with acks=all (franz-go's defaults, stated anyway), and no topic
// auto-creation (franz-go's default). Rebalances wait until a polled batch is done, so an
// offset is never committed for a partition that moved to another member mid-batch.
func (p *Participant) kafkaOptions(cfg KafkaConfig) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.GroupID),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(sessionTimeout),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.BlockRebalanceOnPoll(),
		kgo.MetadataMaxAge(metadataMaxAge),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		kgo.WithLogger(kafkaLogger{p.cfg.Logger}),
	}
	return append(opts, cfg.Options...)
}

// Run consumes until ctx is cancelled, then shuts down gracefully: it finishes the message in
// hand (handler, reply, commit), flushes the producer and leaves the group. It returns nil
// after a graceful stop, or the error that kept it from starting.
func (p *Participant) Run(ctx context.Context, cfg KafkaConfig) error {
	if cfg.GroupID == "" || len(cfg.Topics) == 0 {
		return errors.New("participant: KafkaConfig needs a GroupID and Topics")
	}
	cl, err := kgo.NewClient(p.kafkaOptions(cfg)...)
	if err != nil {
		return err
	}
	defer p.shutdown(cl)
	p.cfg.Logger.Info("participant consuming", "group", cfg.GroupID, "topics", cfg.Topics)
	for ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, pollBatch)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) {
				// Unknown topics land here too: transient, polling goes on.
				p.cfg.Logger.Warn("kafka fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		for _, r := range fetches.Records() {
			if ctx.Err() != nil {
				break // not started: read again by whoever gets the partition next
			}
			p.handleRecord(ctx, cl, cfg, r)
		}
		cl.AllowRebalance()
	}
	return nil
}

func (p *Participant) shutdown(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		p.cfg.Logger.Warn("flushing the producer", "err", err)
	}
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(ctx); err != nil {
		p.cfg.Logger.Warn("leaving the group", "err", err)
	}
	cl.Close()
	p.cfg.Logger.Info("participant stopped")
}

// handleRecord processes one record until its reply (or dead-letter copy) is acknowledged,
// then commits its offset. A failure is retried with backoff on the same record, so the
// partition does not move on. A stop during the backoff abandons the record uncommitted; a
// stop while it is being processed lets that finish (the work context ignores the stop).
func (p *Participant) handleRecord(ctx context.Context, cl *kgo.Client, cfg KafkaConfig, r *kgo.Record) {
	work := context.WithoutCancel(ctx)
	backoff := newBackoff(cfg.MinBackoff, cfg.MaxBackoff)
	for {
		err := p.processAndProduce(work, cl, r)
		if err == nil {
			break
		}
		p.cfg.Logger.Error("message not handled; will retry", "topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "err", err)
		if !backoff.wait(ctx) {
			return
		}
	}
	if err := cl.CommitRecords(work, r); err != nil {
		// Not fatal: the message is read again and answered from the store.
		p.cfg.Logger.Warn("commit failed", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	}
}

func (p *Participant) processAndProduce(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	out, err := p.Process(ctx, fromKafka(r))
	if err != nil || out.Record == nil {
		return err
	}
	if out.DeadLetter != "" {
		p.cfg.Logger.Warn("dead-lettered", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "reason", out.DeadLetter)
	}
	return cl.ProduceSync(ctx, toKafka(out.Record)).FirstErr()
}

func fromKafka(r *kgo.Record) Message {
	headers := make([]Header, len(r.Headers))
	for i, h := range r.Headers {
		headers[i] = Header{Key: h.Key, Value: h.Value}
	}
	return Message{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key,
		Headers: headers, Value: r.Value}
}

func toKafka(rec *Record) *kgo.Record {
	headers := make([]kgo.RecordHeader, len(rec.Headers))
	for i, h := range rec.Headers {
		headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return &kgo.Record{Topic: rec.Topic, Key: rec.Key, Headers: headers, Value: rec.Value}
}

// backoff doubles a wait from min to max.
type backoff struct{ next, max time.Duration }

func newBackoff(minWait, maxWait time.Duration) *backoff {
	if minWait <= 0 {
		minWait = 500 * time.Millisecond
	}
	if maxWait < minWait {
		maxWait = max(30*time.Second, minWait)
	}
	return &backoff{next: minWait, max: maxWait}
}

// step returns the next wait and doubles the one after it.
func (b *backoff) step() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	return d
}

// wait sleeps for the next backoff; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.step())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// kafkaLogger routes franz-go's warnings and errors to the participant's slog.Logger.
type kafkaLogger struct{ l *slog.Logger }

func (kafkaLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kafkaLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	k.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}

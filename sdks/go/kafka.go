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
	fetchMaxWait    = time.Second
	pollBatch       = 100
)

// kafkaOptions are the client options of Run: its own group, earliest reset, no automatic
// commits, idempotent producer with acks=all (franz-go's defaults, stated anyway), and no topic
// auto-creation (franz-go's default). Rebalances wait until a polled batch is done, so an
// offset is never committed for a partition that moved to another member mid-batch;
// onBlocked is told when a rebalance waits, so that the batch is cut short.
func (p *Participant) kafkaOptions(cfg KafkaConfig, onBlocked func()) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.GroupID),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(sessionTimeout),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { onBlocked() }),
		kgo.MetadataMaxAge(metadataMaxAge),
		// A partition resumed after its backoff joins the next fetch, after the one in flight:
		// a short wait keeps that delay small.
		kgo.FetchMaxWait(fetchMaxWait),
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
	c := newConsumer(p, cfg)
	cl, err := kgo.NewClient(p.kafkaOptions(cfg, c.rebalanceWaits)...)
	if err != nil {
		return err
	}
	c.cl = cl
	defer p.shutdown(cl)
	p.cfg.Logger.Info("participant consuming", "group", cfg.GroupID, "topics", cfg.Topics)
	for ctx.Err() == nil {
		// The poll returns when the next paused partition is due, to resume it.
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if due := c.resumeDue(); !due.IsZero() {
			pollCtx, cancel = context.WithDeadline(ctx, due)
		}
		fetches := cl.PollRecords(pollCtx, pollBatch)
		cancel()
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				// Unknown topics land here too: transient, polling goes on.
				p.cfg.Logger.Warn("kafka fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		c.handleBatch(ctx, fetches.Records())
		c.allowRebalance()
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

func (p *Participant) processAndProduce(ctx context.Context, cl recordClient, r *kgo.Record) error {
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

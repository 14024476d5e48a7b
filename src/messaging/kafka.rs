//! librdkafka client configuration.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::envelope::Record;
use crate::config::KafkaSettings;

/// Creates a client; a configuration error comes back without the value it is about
/// (it may be a password: see `redact::kafka_error`).
pub fn create<C: rdkafka::config::FromClientConfig>(
    config: &ClientConfig,
) -> Result<C, rdkafka::error::KafkaError> {
    use rdkafka::error::KafkaError;
    config.create().map_err(|e| {
        // Creation errors are librdkafka's own text, which may quote any property.
        let secrets: Vec<&str> = config
            .config_map()
            .into_iter()
            .filter(|(k, _)| !crate::redact::harmless_kafka_property(k))
            .map(|(_, v)| v)
            .collect();
        match crate::redact::kafka_error(e) {
            KafkaError::ClientCreation(text) => {
                KafkaError::ClientCreation(crate::redact::mask_all(&text, secrets))
            }
            KafkaError::ClientConfig(code, text, key, value) => {
                KafkaError::ClientConfig(code, crate::redact::mask_all(&text, secrets), key, value)
            }
            other => other,
        }
    })
}

fn base(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.bootstrap_servers);
    for (k, v) in &settings.properties {
        c.set(k, v);
    }
    c
}

/// Properties librdkafka rejects on the wrong kind of client are dropped per client.
fn without(mut c: ClientConfig, keys: &[&str]) -> ClientConfig {
    for k in keys {
        c.remove(k);
    }
    c
}

const CONSUMER_ONLY: &[&str] = &[
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.poll.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "auto.offset.reset",
    "group.instance.id",
    "partition.assignment.strategy",
];
const PRODUCER_ONLY: &[&str] = &[
    "linger.ms",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "acks",
    "message.timeout.ms",
];

/// Producer settings sagaflow chooses, each overridable through `kafka.properties`:
/// - `linger.ms=0` (librdkafka: 5): a message goes out as soon as the producer's thread
///   sees it. Measured on Apache Kafka 4.4, `linger.ms=1` cost about 1.2 ms per hop of a
///   lone saga and bought no throughput at concurrency 100 (docs/benchmarks.md): under
///   load messages queue behind the requests in flight and are batched anyway.
/// - `message.timeout.ms=30000` (librdkafka: 300000): how long a message may wait for
///   delivery. A relay round waits for every acknowledgement, so this bounds how long an
///   unresponsive broker can hold the relay before it notices, retries, and after
///   repeated failures replaces its producer. Failed rows stay in the outbox.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] =
    &[("linger.ms", "0"), ("message.timeout.ms", "30000")];

/// Idempotent producer: retries never duplicate or reorder within a partition.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut c = without(base(settings), CONSUMER_ONLY);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    for (key, value) in PRODUCER_DEFAULTS {
        if !settings.properties.contains_key(*key) {
            c.set(*key, *value);
        }
    }
    create(&c)
}

/// A producer replaced by a fresh one after failures in a row. A producer can stay
/// wedged after a broker outage (seen on Apache Kafka 4.4 after a 10 s pause: deliveries
/// that never completed, partitions cached without a leader); a new client starts with
/// fresh metadata and a fresh producer id. Shared by the relay and the participants.
pub struct HealingProducer {
    settings: KafkaSettings,
    producer: std::sync::RwLock<FutureProducer>,
    failures: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for HealingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealingProducer")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl HealingProducer {
    /// Failures in a row after which the producer is replaced.
    pub const FAILURES_BEFORE_NEW_PRODUCER: u32 = 3;

    pub fn new(settings: &KafkaSettings, producer: FutureProducer) -> HealingProducer {
        HealingProducer {
            settings: settings.clone(),
            producer: std::sync::RwLock::new(producer),
            failures: Default::default(),
        }
    }

    /// The producer in use now.
    pub fn get(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn succeeded(&self) {
        self.failures.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a failure; the third in a row replaces the producer.
    pub fn failed(&self) {
        use std::sync::atomic::Ordering;
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 < Self::FAILURES_BEFORE_NEW_PRODUCER {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        match producer(&self.settings) {
            Ok(fresh) => {
                tracing::warn!("replacing a Kafka producer after repeated failures");
                *self.producer.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "a new Kafka producer could not be created"),
        }
    }
}

/// An admin client's settings: the bootstrap servers and the connection's security
/// (`security.*`, `sasl.*`, `ssl.*`), none of the producer's or consumer's tuning.
pub fn admin_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.bootstrap_servers);
    for (k, v) in &settings.properties {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            config.set(k, v);
        }
    }
    config
}

/// Consumer with manual offset storage: an offset is stored only after the database
/// transaction that applied its message has committed; auto-commit then commits
/// stored offsets only.
pub fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut c = without(base(settings), PRODUCER_ONLY);
    c.set("group.id", group);
    c.set("client.id", consumer_client_id(settings));
    c.set("enable.auto.commit", "true");
    c.set("enable.auto.offset.store", "false");
    for (key, value) in CONSUMER_DEFAULTS {
        if !settings.properties.contains_key(*key) {
            c.set(*key, *value);
        }
    }
    c
}

/// The consumer's `client.id`: the one in `kafka.properties`, else one unique to this
/// process (`sagaflow-<host>-<pid>`), by which the group watchdog finds its member
/// (`membership.rs`) and operators tell replicas apart in the group's description.
pub fn consumer_client_id(settings: &KafkaSettings) -> String {
    if let Some(id) = settings.properties.get("client.id") {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("sagaflow-{host}-{}", std::process::id())
}

/// Consumer settings sagaflow chooses where librdkafka's defaults do not fit, each
/// overridable through `kafka.properties`:
/// - `auto.offset.reset=earliest`: a new group must read what was sent before it joined.
/// - `session.timeout.ms=10000` (librdkafka: 45000): a replica that dies without leaving
///   keeps its reply partitions until the group coordinator expires its session. For 45 s
///   the survivors would time out every step waiting on those partitions, and a saga's
///   whole retry allowance can be shorter than that. Kafka's lowest allowed value is 6 s
///   (`group.min.session.timeout.ms`); 10 s leaves room for a slow heartbeat.
/// - `heartbeat.interval.ms=1000`: a third of the session is the usual ratio, and a
///   shorter interval lets a rebalance reach every member sooner.
///
/// See docs/guarantees.md ("Losing a replica") for how step timeouts relate to these.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
];

/// A received message's headers as (name, raw bytes); a header without a value is empty.
pub fn headers_of(m: &rdkafka::message::OwnedMessage) -> Vec<(String, Vec<u8>)> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What to store after a batch has been applied: per partition, the offset of the next
/// message to read, one past the highest offset in `consumed`. These go to
/// `store_offsets`, which stores offsets as given. (`store_offset` is the trap:
/// librdkafka adds 1 to its argument itself, so passing `offset + 1` there committed one
/// past the end and skipped a message per partition after every restart or rebalance.)
pub fn next_offsets<'a>(
    consumed: impl IntoIterator<Item = (&'a str, i32, i64)>,
) -> rdkafka::TopicPartitionList {
    let mut highest: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for (topic, partition, offset) in consumed {
        let e = highest.entry((topic, partition)).or_insert(offset);
        *e = (*e).max(offset);
    }
    let mut list = rdkafka::TopicPartitionList::with_capacity(highest.len());
    for ((topic, partition), offset) in highest {
        // Only fails for a negative offset, which a consumed message never has.
        let _ = list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset + 1));
    }
    list
}

/// Stores the offsets after `batch` for the next commit. A partition revoked meanwhile
/// cannot be stored; its new owner reads those messages again and the inbox drops them.
pub fn store_consumed<C, M>(consumer: &C, batch: &[M])
where
    C: rdkafka::consumer::Consumer<rdkafka::consumer::DefaultConsumerContext> + ?Sized,
    M: rdkafka::Message,
{
    let list = next_offsets(batch.iter().map(|m| (m.topic(), m.partition(), m.offset())));
    if let Err(e) = consumer.store_offsets(&list) {
        tracing::warn!(error = %e, "storing offsets failed (partition revoked?)");
    }
}

pub fn to_future_record<'a>(r: &'a Record) -> FutureRecord<'a, str, [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (k, v) in &r.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    FutureRecord::to(&r.topic)
        .key(r.key.as_str())
        .payload(r.payload.as_slice())
        .headers(headers)
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    r: &Record,
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    producer
        .send(to_future_record(r), Timeout::After(timeout))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

pub fn flush(producer: &FutureProducer, timeout: Duration) {
    if let Err(e) = producer.flush(Timeout::After(timeout)) {
        tracing::warn!(error = %e, "producer flush did not complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Offset;

    #[test]
    fn next_offsets_are_one_past_the_highest_per_partition() {
        let list = next_offsets([("a", 0, 7), ("a", 0, 5), ("a", 1, 0), ("b", 0, 41)]);
        let at = |t: &str, p| list.find_partition(t, p).map(|e| e.offset());
        assert_eq!(at("a", 0), Some(Offset::Offset(8)));
        assert_eq!(at("a", 1), Some(Offset::Offset(1)));
        assert_eq!(at("b", 0), Some(Offset::Offset(42)));
        assert_eq!(list.count(), 3);
    }
}

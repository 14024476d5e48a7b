//! librdkafka client configuration.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::envelope::Record;
use crate::config::KafkaSettings;

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
];

/// Idempotent producer: retries never duplicate or reorder within a partition.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut c = without(base(settings), CONSUMER_ONLY);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    if !settings.properties.contains_key("linger.ms") {
        c.set("linger.ms", "1");
    }
    c.create()
}

/// Consumer with manual offset storage: an offset is stored only after the database
/// transaction that applied its message has committed; auto-commit then commits
/// stored offsets only.
pub fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut c = without(base(settings), PRODUCER_ONLY);
    c.set("group.id", group);
    c.set("enable.auto.commit", "true");
    c.set("enable.auto.offset.store", "false");
    if !settings.properties.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    c
}

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

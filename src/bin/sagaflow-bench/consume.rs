//! What every consumer of the bench shares: a group of its own, and reading until the
//! run is cancelled.

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use sagaflow::config::KafkaSettings;
use sagaflow::messaging::kafka;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A consumer's settings in a new group named after `role`, so it reads every message
/// from the start of the run and no other member takes its partitions.
pub(crate) fn own_group(settings: &KafkaSettings, role: &str) -> ClientConfig {
    kafka::consumer_config(settings, &format!("{role}-{}", Uuid::new_v4().simple()))
}

/// The next message `consumer` reads (read errors skipped), or `None` once `cancel`
/// fires.
pub(crate) async fn next<'c>(
    consumer: &'c StreamConsumer,
    cancel: &CancellationToken,
) -> Option<BorrowedMessage<'c>> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            m = consumer.recv() => if let Ok(m) = m { return Some(m) },
        }
    }
}

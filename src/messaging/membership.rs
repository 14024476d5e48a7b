//! The consumer-group watchdog. A consumer that the group coordinator no longer counts
//! as a member, while the broker answers, receives nothing and would wait for ever. This
//! was seen after pausing a single Apache Kafka node (docs/guarantees.md): the member's
//! session expired while its coordinator was unknown, and the consumer never rejoined.
//! After `wedged_after` of that, the consumer loop ends, and supervision stops the
//! process (exit 70), so the orchestrator starts a fresh one that joins the group; its
//! batch in hand was not committed and is read again.
//!
//! The member is recognised by its `client.id` (`kafka::consumer_client_id`; replicas
//! that share one set in `kafka.properties` hide each other's absence). A broker that
//! does not answer is an outage, not a wedge: it does not count. Groups of the KIP-848
//! protocol (`group.protocol=consumer`) are not described by this request, so the
//! service turns the watchdog off for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

/// How often the group's members are read from the broker.
const CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Watchdog {
    pub group: String,
    pub client_id: String,
    /// How long out of the group, with the broker answering, counts as wedged.
    pub wedged_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Member,
    Absent,
    /// The broker did not answer.
    Unknown,
}

/// Whether the group coordinator lists a member with `client_id` in `group`.
pub fn membership(consumer: &StreamConsumer, group: &str, client_id: &str) -> Membership {
    match consumer.fetch_group_list(Some(group), Duration::from_secs(5)) {
        Err(_) => Membership::Unknown,
        Ok(list) => {
            let Some(found) = list.groups().iter().find(|g| g.name() == group) else {
                return Membership::Unknown;
            };
            // "Dead" (or no state) is also what a group of the KIP-848 protocol looks
            // like to this classic request: no verdict then.
            if matches!(found.state(), "" | "Dead") {
                return Membership::Unknown;
            }
            if found.members().iter().any(|m| m.client_id() == client_id) {
                Membership::Member
            } else {
                Membership::Absent
            }
        }
    }
}

/// Cancels `wedged` once the consumer has been absent from its group for
/// `wedged_after` while the broker answered; returns then, or when `cancel` fires.
/// While `applying` is set, the consumer loop is busy with a batch (perhaps retrying it
/// through a database outage, long enough for librdkafka to leave the group on
/// `max.poll.interval.ms`): that is not a wedge, and the clock starts again after it.
pub async fn watch(
    consumer: Arc<StreamConsumer>,
    dog: Watchdog,
    applying: Arc<AtomicBool>,
    wedged: CancellationToken,
    cancel: CancellationToken,
) {
    let mut absent_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let (c, d) = (consumer.clone(), dog.clone());
        let Ok(now) =
            tokio::task::spawn_blocking(move || membership(&c, &d.group, &d.client_id)).await
        else {
            continue;
        };
        if applying.load(Ordering::Relaxed) {
            absent_since = None;
            continue;
        }
        match now {
            Membership::Member => absent_since = None,
            Membership::Unknown => {}
            Membership::Absent => {
                let since = *absent_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= dog.wedged_after {
                    tracing::error!(
                        group = %dog.group,
                        client_id = %dog.client_id,
                        seconds = since.elapsed().as_secs(),
                        "the consumer is left out of its consumer group while the broker answers; stopping so a fresh process rejoins"
                    );
                    wedged.cancel();
                    return;
                }
            }
        }
    }
}

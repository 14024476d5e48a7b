//! What a commit tells other processes (other replicas' relays, every replica's live
//! streams), sent after the commit instead of by `NOTIFY` inside it.
//!
//! PostgreSQL serialises the commits of transactions that notify: each takes a global
//! lock on the notification queue before its commit record and holds it until the
//! commit is done. When every start and every apply batch notified, their commits, WAL
//! flush included, ran one at a time; sent afterwards on a statement of their own,
//! only these small statements queue on that lock. Measured in docs/benchmarks.md.
//!
//! Announcements are hints, like every notification here: one that is lost (the
//! process dies after its commit, or PostgreSQL refuses the statement) delays the other
//! replicas' relays until their poll, and live streams until their next change.

use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::wake;

/// What one commit announces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Announcement {
    /// It wrote outbox rows: every relay should look.
    pub outbox: bool,
    /// The sagas it changed, for live streams.
    pub sagas: Vec<Uuid>,
}

impl Announcement {
    pub fn is_empty(&self) -> bool {
        !self.outbox && self.sagas.is_empty()
    }

    /// This announcement and `other`'s together.
    pub fn merge(&mut self, other: Announcement) {
        self.outbox |= other.outbox;
        self.sagas.extend(other.sagas);
    }
}

/// Sends announcements on a task of its own, coalescing whatever has queued since its
/// last statement into the next one.
#[derive(Debug, Clone)]
pub struct Announcer {
    queue: Option<mpsc::UnboundedSender<Announcement>>,
}

/// Ids per statement at most; more wait for the next one.
const SAGAS_PER_ROUND: usize = 20 * wake::SAGAS_PER_NOTIFICATION;

impl Announcer {
    /// Sends through `pool`, naming `origin` as the writer of outbox rows (its own relay
    /// skips those: it was woken directly). Outside a Tokio runtime nothing is sent.
    pub fn spawn(pool: PgPool, origin: Arc<str>) -> Announcer {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Announcer { queue: None };
        };
        // A connection of its own, whose commits do not wait for the WAL to reach the
        // disk: a notification carries the sending transaction's id, so each is a commit
        // of its own, and a hint needs no durability.
        let options = (*pool.connect_options())
            .clone()
            .options([("synchronous_commit", "off")]);
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let (queue, received) = mpsc::unbounded_channel();
        runtime.spawn(send_all(own, origin, received));
        Announcer { queue: Some(queue) }
    }

    pub fn send(&self, a: Announcement) {
        if let (false, Some(queue)) = (a.is_empty(), &self.queue) {
            // The task ends only when every sender is gone.
            let _ = queue.send(a);
        }
    }
}

/// Until every [`Announcer`] is dropped: takes what has queued, sends it as one
/// statement.
async fn send_all(
    pool: PgPool,
    origin: Arc<str>,
    mut received: mpsc::UnboundedReceiver<Announcement>,
) {
    while let Some(mut next) = received.recv().await {
        while next.sagas.len() < SAGAS_PER_ROUND {
            match received.try_recv() {
                Ok(more) => next.merge(more),
                Err(_) => break,
            }
        }
        let (channels, payloads) = notifications(&next, &origin);
        let sent =
            sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) AS n(c, p)")
                .bind(&channels)
                .bind(&payloads)
                .execute(&pool)
                .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "announcement not sent; other replicas find the rows at their poll");
        }
    }
}

/// The (channel, payload) pairs that say `a`.
fn notifications(a: &Announcement, origin: &str) -> (Vec<&'static str>, Vec<String>) {
    let mut channels = Vec::new();
    let mut payloads = Vec::new();
    if a.outbox {
        channels.push(wake::OUTBOX_CHANNEL);
        payloads.push(origin.to_owned());
    }
    for chunk in wake::saga_payloads(a.sagas.iter()) {
        channels.push(wake::SAGAS_CHANNEL);
        payloads.push(chunk);
    }
    (channels, payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesced_announcements_name_the_outbox_once_and_each_saga_once() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut all = Announcement {
            outbox: false,
            sagas: vec![a],
        };
        all.merge(Announcement {
            outbox: true,
            sagas: vec![b, a],
        });
        let (channels, payloads) = notifications(&all, "me");
        assert_eq!(channels, [wake::OUTBOX_CHANNEL, wake::SAGAS_CHANNEL]);
        assert_eq!(payloads[0], "me");
        let mut ids = wake::parse_saga_payload(&payloads[1]);
        ids.sort();
        assert_eq!(ids, {
            let mut both = vec![a, b];
            both.sort();
            both
        });
        assert!(Announcement::default().is_empty());
    }
}

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

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
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

/// Sends announcements on a task of its own: whatever was announced since its last
/// statement goes in the next one.
#[derive(Debug, Clone)]
pub struct Announcer {
    queue: Option<Queue>,
}

#[derive(Debug, Clone)]
struct Queue {
    waiting: Arc<Mutex<Announcement>>,
    /// Rung after each announcement (holding one ring at most); closed when every
    /// `Announcer` is gone, which ends the task.
    bell: mpsc::Sender<()>,
}

impl Announcer {
    /// Sends through `pool`, naming `origin` as the writer of outbox rows (its own relay
    /// skips those: it was woken directly). Outside a Tokio runtime nothing is sent.
    pub fn spawn(pool: PgPool, origin: Arc<str>) -> Announcer {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Announcer { queue: None };
        };
        let waiting = Arc::new(Mutex::new(Announcement::default()));
        let (bell, rung) = mpsc::channel(1);
        runtime.spawn(send_all(pool, origin, waiting.clone(), rung));
        Announcer {
            queue: Some(Queue { waiting, bell }),
        }
    }

    pub fn send(&self, a: Announcement) {
        let (false, Some(queue)) = (a.is_empty(), &self.queue) else {
            return;
        };
        queue
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(a);
        // Full: a ring is already waiting, and it takes this announcement too.
        let _ = queue.bell.try_send(());
    }
}

/// Until every [`Announcer`] is dropped: takes what waits, sends it as one statement
/// (each saga once).
async fn send_all(
    pool: PgPool,
    origin: Arc<str>,
    waiting: Arc<Mutex<Announcement>>,
    mut rung: mpsc::Receiver<()>,
) {
    let mut failing = false;
    let mut last = tokio::time::Instant::now();
    while rung.recv().await.is_some() {
        // At most one statement per interval: under load many commits share it.
        tokio::time::sleep_until(last + INTERVAL).await;
        last = tokio::time::Instant::now();
        let next = std::mem::take(&mut *waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if next.is_empty() {
            continue;
        }
        let (channels, payloads) = notifications(&next, &origin);
        let sent = sqlx::query(SEND)
            .bind(&channels)
            .bind(&payloads)
            .execute(&pool)
            .await;
        match sent {
            Ok(_) => failing = false,
            // Once per run of failures: the poll and the next change cover for them.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "commits not announced; other replicas' relays wait for their poll");
            }
            Err(_) => {}
        }
    }
}

/// The shortest time between two statements. Each is a transaction and a commit, so
/// this bounds them to 10 a second however many commits they announce (at 20 ms they
/// added 0.04–0.06 commits per step to the closed loop). A relay of another replica
/// learns of this one's rows up to this much later, which matters only when a shard
/// was held by that replica as this one's relay looked (this replica's own relay is
/// woken directly, at once); a live stream shows a change up to this much later.
const INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One statement, so one transaction: a notification carries its transaction's id,
/// so each is a commit, and a hint needs no durability (`synchronous_commit` off for
/// this transaction only, set in the statement so a pooler's session sees no change).
const SEND: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, p) \
    FROM UNNEST($1::text[], $2::text[]) AS n(c, p)";

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

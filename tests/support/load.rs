//! A saga load shared by the failover tests and the chaos test: `crash-flow` sagas
//! whose participants record every command (to catch a step attempt sent twice with
//! different contents) and answer after 40–130 ms, failing orders n % 7 == 0 at `charge`
//! and n % 7 == 1 at `ship`, and the checks every such test ends with.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use sagaflow::config::Settings;
use sagaflow::engine::{Phase, SagaStatus};
use sagaflow::messaging::kafka;
use sagaflow::participant::{Command, Decision, Policy};
use sagaflow::store::Store;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

/// (saga, step, phase, attempt) → (command id, payload) of the first delivery.
pub type Seen = HashMap<(Uuid, String, Phase, u32), (String, Value)>;

/// Remembers every command a participant received and counts any (saga, step, phase,
/// attempt) that arrived again with a different command id or payload.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Seen>,
    pub conflicts: AtomicUsize,
}

impl Recorder {
    pub fn record(&self, c: &Command) {
        let mut seen = self.seen.lock().unwrap();
        let key = (c.saga_id, c.step.clone(), c.phase, c.attempt);
        let value = (c.command_id.clone(), c.payload.clone());
        match seen.get(&key) {
            Some(previous) if *previous != value => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
            None => {
                seen.insert(key, value);
            }
        }
    }
}

pub fn order_no(c: &Command) -> u64 {
    c.payload
        .get("order")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(u64::MAX)
}

/// Saga `n` fails (for good) at `charge` when n % 7 == 0 and at `ship` when n % 7 == 1.
pub fn expected(n: u64) -> SagaStatus {
    if n % 7 <= 1 {
        SagaStatus::Compensated
    } else {
        SagaStatus::Completed
    }
}

/// Participants answer after 40–130 ms, so hundreds of sagas are in flight at once.
pub fn policy(rec: Arc<Recorder>) -> Policy {
    Arc::new(move |c: &Command| {
        rec.record(c);
        let n = order_no(c);
        let fail = c.phase == Phase::Command
            && ((n.is_multiple_of(7) && c.step == "charge") || (n % 7 == 1 && c.step == "ship"));
        let d = if fail {
            Decision::Failure { retryable: false }
        } else {
            Decision::Success
        };
        (d, Duration::from_millis(40 + (n % 10) * 10))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Nothing should have failed: any timeout or retry hides a loss.
    Forbidden,
    /// The fault itself can outlast a step timeout; outcomes must still be exact.
    Allowed,
}

/// One test's world: database, broker, participants, and what it asked for.
pub struct Rig {
    pub settings: Settings,
    pub store: Store,
    pub rec: Arc<Recorder>,
    pub participants: Option<Participants>,
    /// Every order number started over HTTP or by a trigger event.
    pub orders: Vec<u64>,
    pub _db: TestDb,
}

impl Rig {
    pub async fn new(broker: &Broker) -> Rig {
        log_init();
        let db = TestDb::new().await;
        let settings = settings(&db, broker, &repo_path("tests/sagas-crash"));
        let store = db.store().await;
        let rec = Arc::new(Recorder::default());
        let participants = participants(
            &settings,
            load_defs(&settings.runtime.sagas_dir),
            policy(rec.clone()),
        );
        Rig {
            settings,
            store,
            rec,
            participants: Some(participants),
            orders: Vec::new(),
            _db: db,
        }
    }

    /// A replica: `sagaflow serve` as a child process with the default Kafka settings.
    pub async fn replica(&self) -> Process {
        let p = Process::start(&self.settings);
        p.wait_ready().await;
        p
    }

    /// Starts orders `range` over HTTP on the replica listening on `port`.
    pub async fn start_http(&mut self, port: u16, range: std::ops::Range<u64>) {
        for n in range {
            let url = format!("http://127.0.0.1:{port}/v1/sagas/crash-flow");
            let body = json!({"input": {"n": n}, "key": format!("order-{n}")});
            let (status, text) = http("POST", &url, Some(&body), &[])
                .await
                .expect("service answers");
            assert_eq!(status, 201, "{text}");
            self.orders.push(n);
        }
    }

    /// Sends one `crash.order_placed` trigger event per order in `range`.
    pub async fn send_triggers(&mut self, range: std::ops::Range<u64>) {
        let producer = kafka::producer(&self.settings.kafka).unwrap();
        for n in range {
            let record = cloud_event(
                topic(&self.settings, "crash.orders"),
                &format!("order-{n}"),
                (&format!("placed-{n}"), "/tests/shop", "crash.order_placed"),
                &json!({"n": n}),
            );
            kafka::send(&producer, &record, Duration::from_secs(60))
                .await
                .unwrap();
            self.orders.push(n);
        }
    }

    pub async fn terminal_count(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE status IN ('completed', 'compensated', 'failed')",
        )
        .fetch_one(&self.store.pool)
        .await
        .unwrap()
    }

    pub async fn wait_terminal(&self, at_least: i64) {
        eventually(
            &format!("{at_least} sagas to finish"),
            Duration::from_secs(120),
            || async { (self.terminal_count().await >= at_least).then_some(()) },
        )
        .await;
    }

    /// Ids of the sagas running now.
    pub async fn running(&self) -> Vec<Uuid> {
        sqlx::query_scalar(
            "SELECT id FROM sagas WHERE status NOT IN ('completed', 'compensated', 'failed')",
        )
        .fetch_all(&self.store.pool)
        .await
        .unwrap()
    }

    /// The longest any of `sagas` went without a new history entry after `since`: how
    /// long the fault held them up.
    pub async fn longest_stall(&self, sagas: &[Uuid], since: DateTime<Utc>) -> Duration {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT max(EXTRACT(EPOCH FROM first - $2))::float8 FROM \
             (SELECT min(at) AS first FROM saga_history \
              WHERE saga_id = ANY($1) AND at > $2 GROUP BY saga_id) s",
        )
        .bind(sagas)
        .bind(since)
        .fetch_one(&self.store.pool)
        .await
        .unwrap();
        Duration::from_secs_f64(secs.unwrap_or(0.0))
    }

    /// The checks every test ends with (see the module documentation).
    pub async fn check(self) {
        self.check_outcomes(Retries::Forbidden).await;
    }

    /// The checks every test ends with (see the module documentation); `retries` says
    /// whether the fault may cost timeouts and retries.
    pub async fn check_outcomes(mut self, retries: Retries) {
        let total = self.orders.len() as i64;
        let distinct: HashSet<u64> = self.orders.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            self.orders.len(),
            "the test reused an order number"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while self.terminal_count().await < total {
            if std::time::Instant::now() > deadline {
                self.explain_stuck(total).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rows: Vec<(Option<String>, Uuid, String)> =
            sqlx::query_as("SELECT business_key, id, status FROM sagas")
                .fetch_all(&self.store.pool)
                .await
                .unwrap();
        assert_eq!(rows.len(), self.orders.len(), "one saga per start");
        let by_key: HashMap<String, (Uuid, String)> = rows
            .into_iter()
            .map(|(k, id, s)| (k.unwrap_or_default(), (id, s)))
            .collect();
        for n in &self.orders {
            let (id, status) = by_key
                .get(&format!("order-{n}"))
                .unwrap_or_else(|| panic!("order {n} never became a saga"));
            assert_eq!(
                status,
                expected(*n).as_str(),
                "saga {n} ({id}): {:#?}",
                timeline(&self.store, *id)
                    .await
                    .iter()
                    .map(|h| format!(
                        "{} {:?} {:?} {:?} {}",
                        h.kind, h.step, h.phase, h.attempt, h.detail
                    ))
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(
            self.rec.conflicts.load(Ordering::Relaxed),
            0,
            "a step attempt was sent twice with different contents"
        );
        let hidden: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM saga_history \
             WHERE kind IN ('timed_out', 'retry_scheduled') OR attempt > 1 GROUP BY kind",
        )
        .fetch_all(&self.store.pool)
        .await
        .unwrap();
        if retries == Retries::Forbidden && !hidden.is_empty() {
            panic!(
                "timeouts or retries: {hidden:?}\n{}",
                self.explain_retries().await
            );
        } else if !hidden.is_empty() {
            eprintln!("timeouts and retries the fault cost: {hidden:?}");
        }
        eventually("the outbox to drain", Duration::from_secs(30), || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.store.pool)
                .await
                .unwrap();
            (n == 0).then_some(())
        })
        .await;
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_parked")
            .fetch_one(&self.store.pool)
            .await
            .unwrap();
        assert_eq!(parked, 0, "outbox rows parked");
        let dead = read_topic(&self.settings, &self.settings.kafka.dead_letter_topic).await;
        assert!(
            dead.is_empty(),
            "dead letters: {:?}",
            dead.iter()
                .map(|m| header(m, "dlq-reason"))
                .collect::<Vec<_>>()
        );
        self.check_lifecycle(&by_key).await;
        if let Some(p) = self.participants.take() {
            p.stop().await;
        }
    }

    /// The timeline of every saga that timed out or retried, with what the participants
    /// received of it: tells a lost command from a lost or late reply.
    async fn explain_retries(&self) -> String {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT saga_id FROM saga_history \
             WHERE kind IN ('timed_out', 'retry_scheduled') OR attempt > 1",
        )
        .fetch_all(&self.store.pool)
        .await
        .unwrap();
        let mut out = String::new();
        for id in ids {
            out += &format!("saga {id}:\n");
            for h in timeline(&self.store, id).await {
                out += &format!(
                    "  {} {} {:?} {:?} #{:?} {}\n",
                    h.at.format("%H:%M:%S%.3f"),
                    h.kind,
                    h.step,
                    h.phase,
                    h.attempt,
                    h.detail
                );
            }
            let seen = self.rec.seen.lock().unwrap();
            let mut got: Vec<String> = seen
                .keys()
                .filter(|k| k.0 == id)
                .map(|(_, step, phase, attempt)| format!("{phase:?}:{step}#{attempt}"))
                .collect();
            got.sort();
            out += &format!("  participants received: {got:?}\n");
        }
        out
    }

    /// Fails the test with what the sagas that did not finish look like.
    pub async fn explain_stuck(&self, total: i64) -> ! {
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
                .fetch_all(&self.store.pool)
                .await
                .unwrap();
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.store.pool)
            .await
            .unwrap();
        let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM timers")
            .fetch_one(&self.store.pool)
            .await
            .unwrap();
        let stuck = self.running().await;
        let example = match stuck.first() {
            Some(id) => timeline(&self.store, *id)
                .await
                .iter()
                .map(|h| {
                    format!(
                        "{} {} {:?} {:?} {:?}",
                        h.at, h.kind, h.step, h.phase, h.attempt
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        };
        panic!(
            "not every saga finished within 180 s ({total} expected): by status {by_status:?}; \
             outbox {outbox}; timers {timers}; now {}; a stuck one:\n{example}",
            Utc::now()
        );
    }

    /// One terminal lifecycle event per saga. Events are at-least-once, so a republished
    /// event (same `ce_id`) is fine; two different terminal events are not.
    pub async fn check_lifecycle(&self, sagas: &HashMap<String, (Uuid, String)>) {
        let events = read_topic(&self.settings, &self.settings.kafka.lifecycle_topic).await;
        let mut ends: HashMap<String, HashSet<String>> = HashMap::new();
        for m in &events {
            let kind = header(m, "ce_type").unwrap_or_default();
            if matches!(
                kind.as_str(),
                "sagaflow.saga.completed" | "sagaflow.saga.compensated" | "sagaflow.saga.failed"
            ) {
                ends.entry(header(m, "ce_sagaid").unwrap_or_default())
                    .or_default()
                    .insert(header(m, "ce_id").unwrap_or_default());
            }
        }
        for (key, (id, _)) in sagas {
            let n = ends.get(&id.to_string()).map_or(0, HashSet::len);
            assert_eq!(
                n,
                1,
                "saga {key} ({id}) published {n} terminal lifecycle events; read {} events, {} sagas with an end; its events: {:?}",
                events.len(),
                ends.len(),
                events
                    .iter()
                    .filter(|m| header(m, "ce_sagaid") == Some(id.to_string()))
                    .map(|m| (m.partition(), m.offset(), header(m, "ce_type")))
                    .collect::<Vec<_>>()
            );
        }
    }
}

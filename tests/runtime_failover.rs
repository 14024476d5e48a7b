//! Faults under load, on Apache Kafka with sagaflow's default Kafka settings: a replica
//! SIGKILLed mid-run, one of two replicas killed, the last member stopped and replaced,
//! a rolling restart of three replicas, the broker SIGKILLed and restarted on its data,
//! and the broker paused.
//!
//! Every test sends new work while the fault lasts (HTTP starts, trigger events, and the
//! participants' replies) and then checks, for every saga it started:
//! - none lost: each HTTP start and each trigger event became exactly one saga;
//! - none stuck: each ended as it would have without the fault;
//! - nothing doubled: no (step, phase, attempt) was ever sent with two different
//!   contents, and each saga published exactly one terminal lifecycle event;
//! - nothing hidden by a retry: no step timed out, no retry was scheduled, no message
//!   was dead-lettered (step timeouts, 30 s, exceed a replica's take-over).
#![allow(clippy::unwrap_used)]

mod support;

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
use support::*;
use uuid::Uuid;

/// (saga, step, phase, attempt) → (command id, payload) of the first delivery.
type Seen = HashMap<(Uuid, String, Phase, u32), (String, Value)>;

/// Remembers every command a participant received and counts any (saga, step, phase,
/// attempt) that arrived again with a different command id or payload.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Seen>,
    conflicts: AtomicUsize,
}

impl Recorder {
    fn record(&self, c: &Command) {
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

fn order_no(c: &Command) -> u64 {
    c.payload
        .get("order")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(u64::MAX)
}

/// Saga `n` fails (for good) at `charge` when n % 7 == 0 and at `ship` when n % 7 == 1.
fn expected(n: u64) -> SagaStatus {
    if n % 7 <= 1 {
        SagaStatus::Compensated
    } else {
        SagaStatus::Completed
    }
}

/// Participants answer after 40–130 ms, so hundreds of sagas are in flight at once.
fn policy(rec: Arc<Recorder>) -> Policy {
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
enum Retries {
    /// Nothing should have failed: any timeout or retry hides a loss.
    Forbidden,
    /// The fault itself can outlast a step timeout; outcomes must still be exact.
    Allowed,
}

/// One test's world: database, broker, participants, and what it asked for.
struct Rig {
    settings: Settings,
    store: Store,
    rec: Arc<Recorder>,
    participants: Option<Participants>,
    /// Every order number started over HTTP or by a trigger event.
    orders: Vec<u64>,
    _db: TestDb,
}

impl Rig {
    async fn new(broker: &Broker) -> Rig {
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
    async fn replica(&self) -> Process {
        let p = Process::start(&self.settings);
        p.wait_ready().await;
        p
    }

    /// Starts orders `range` over HTTP on the replica listening on `port`.
    async fn start_http(&mut self, port: u16, range: std::ops::Range<u64>) {
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
    async fn send_triggers(&mut self, range: std::ops::Range<u64>) {
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

    async fn terminal_count(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE status IN ('completed', 'compensated', 'failed')",
        )
        .fetch_one(&self.store.pool)
        .await
        .unwrap()
    }

    async fn wait_terminal(&self, at_least: i64) {
        eventually(
            &format!("{at_least} sagas to finish"),
            Duration::from_secs(120),
            || async { (self.terminal_count().await >= at_least).then_some(()) },
        )
        .await;
    }

    /// Ids of the sagas running now.
    async fn running(&self) -> Vec<Uuid> {
        sqlx::query_scalar(
            "SELECT id FROM sagas WHERE status NOT IN ('completed', 'compensated', 'failed')",
        )
        .fetch_all(&self.store.pool)
        .await
        .unwrap()
    }

    /// The longest any of `sagas` went without a new history entry after `since`: how
    /// long the fault held them up.
    async fn longest_stall(&self, sagas: &[Uuid], since: DateTime<Utc>) -> Duration {
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
    async fn check(self) {
        self.check_outcomes(Retries::Forbidden).await;
    }

    /// The checks every test ends with (see the module documentation); `retries` says
    /// whether the fault may cost timeouts and retries.
    async fn check_outcomes(mut self, retries: Retries) {
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
        if retries == Retries::Forbidden {
            assert!(hidden.is_empty(), "timeouts or retries: {hidden:?}");
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

    /// Fails the test with what the sagas that did not finish look like.
    async fn explain_stuck(&self, total: i64) -> ! {
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
    async fn check_lifecycle(&self, sagas: &HashMap<String, (Uuid, String)>) {
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

/// One replica under load is stopped by `stop`; while none runs, trigger events arrive
/// and the participants answer; a new replica then finishes everything.
async fn replaced(stop: impl FnOnce(&mut Process)) {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut first = rig.replica().await;
    rig.start_http(first.port, 0..200).await;
    rig.wait_terminal(20).await;
    stop(&mut first);
    let in_flight = rig.running().await;
    assert!(in_flight.len() >= 20, "only {} in flight", in_flight.len());
    rig.send_triggers(200..260).await;
    let mut second = rig.replica().await;
    rig.start_http(second.port, 260..300).await;
    rig.check().await;
    assert!(second.terminate().success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_run_loses_nothing_and_doubles_nothing() {
    replaced(Process::kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_member_stopped_gracefully_a_new_one_resumes() {
    replaced(|p| assert!(p.terminate().success(), "graceful shutdown exits 0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_replicas_killed_the_survivor_takes_over() {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut a = rig.replica().await;
    let mut b = rig.replica().await;
    rig.start_http(a.port, 0..150).await;
    rig.start_http(b.port, 150..300).await;
    rig.wait_terminal(20).await;
    let killed_at = Utc::now();
    a.kill9();
    let in_flight = rig.running().await;
    assert!(in_flight.len() >= 50, "only {} in flight", in_flight.len());
    rig.send_triggers(300..340).await;
    rig.start_http(b.port, 340..380).await;
    let stall = {
        rig.wait_terminal(380).await;
        rig.longest_stall(&in_flight, killed_at).await
    };
    eprintln!(
        "take-over: {} sagas in flight at the kill; the longest wait for progress was {:.1} s",
        in_flight.len(),
        stall.as_secs_f64()
    );
    // Some saga must have waited for the dead member's session to expire (10 s), or the
    // killed replica held no partition and nothing was taken over.
    assert!(
        stall >= Duration::from_secs(5),
        "no saga waited for the take-over ({stall:?}): did the killed replica own partitions?"
    );
    rig.check().await;
    assert!(b.terminate().success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_three_replicas() {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut replicas = vec![
        rig.replica().await,
        rig.replica().await,
        rig.replica().await,
    ];
    let mut next = 0u64;
    for round in 0..3 {
        let port = replicas.last().unwrap().port;
        rig.start_http(port, next..next + 80).await;
        rig.send_triggers(next + 80..next + 100).await;
        next += 100;
        rig.wait_terminal(20 * (round + 1)).await;
        // Replace the oldest: its successor is ready before it stops.
        let successor = rig.replica().await;
        assert!(
            !rig.running().await.is_empty(),
            "sagas in flight at the stop"
        );
        let mut oldest = replicas.remove(0);
        assert!(oldest.terminate().success(), "graceful shutdown exits 0");
        replicas.push(successor);
    }
    rig.start_http(replicas[0].port, next..next + 50).await;
    rig.check().await;
    for mut r in replicas {
        assert!(r.terminate().success(), "graceful shutdown exits 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_sigkilled_and_restarted_on_its_data_loses_nothing() {
    let mut broker = Broker::own();
    let mut rig = Rig::new(&broker).await;
    let mut svc = rig.replica().await;
    rig.start_http(svc.port, 0..200).await;
    rig.wait_terminal(20).await;
    broker.kill9();
    // Sagas can still be started while the broker is down: their commands wait in the outbox.
    rig.start_http(svc.port, 200..240).await;
    broker.restart();
    rig.send_triggers(240..280).await;
    rig.check().await;
    assert!(svc.terminate().success(), "graceful shutdown exits 0");
}

/// Not in the default run: after the paused single-node broker wakes, in about one run
/// in three a consumer group never re-forms (its member's session times out with the
/// coordinator unknown, and nothing moves for minutes), so sagas stay stuck. Whether the
/// fault is librdkafka's, the broker's, or a missing consumer watchdog in sagaflow is
/// not settled; see docs/guarantees.md. Run it with `--run-ignored only`.
#[ignore = "a consumer group sometimes never re-forms after a broker pause (docs/guarantees.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_paused_for_eight_seconds_under_load_loses_nothing() {
    let broker = Broker::own();
    let mut rig = Rig::new(&broker).await;
    let mut svc = rig.replica().await;
    rig.start_http(svc.port, 0..150).await;
    rig.wait_terminal(10).await;
    // Eight seconds: longer than a consumer session would be survivable too, but a
    // single KRaft node paused past its broker session (9 s) is fenced by its own
    // controller on waking, and its partitions then had no leader for over 30 s in one of
    // three runs; that is Kafka's one-node recovery, not sagaflow's, and the broker
    // SIGKILL test covers a longer outage.
    broker.pause();
    rig.start_http(svc.port, 150..200).await;
    let paused_at = std::time::Instant::now();
    eventually("the pause to last 8 s", Duration::from_secs(15), || async {
        (paused_at.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert!(
        backlog > 0,
        "commands of sagas started during the pause wait in the outbox"
    );
    broker.resume();
    rig.send_triggers(200..240).await;
    // On waking, a paused single-node broker sometimes had partitions without a leader
    // for longer than the 30 s step timeout (in about one run in three, a broker-side
    // recovery this test does not control), so here timeouts and retries are allowed;
    // every other check holds: nothing lost, doubled, stuck or ended wrongly.
    rig.check_outcomes(Retries::Allowed).await;
    assert!(svc.terminate().success(), "graceful shutdown exits 0");
}

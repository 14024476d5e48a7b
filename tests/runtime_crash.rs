//! Failure of the orchestrator itself: SIGKILL mid-run, two replicas with one killed,
//! and a broker outage. Every saga must end exactly as it would have without the fault,
//! and no step attempt may ever be sent with two different contents.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagaflow::engine::{Phase, SagaStatus};
use sagaflow::participant::{Command, Decision, Policy};
use sagaflow::store::Store;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

/// Remembers every (saga, step, phase, attempt) a participant received and counts any
/// that arrived twice with a different command id or payload.
/// (saga, step, phase, attempt) → (command id, payload).
type Seen = HashMap<(Uuid, String, Phase, u32), (String, Value)>;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Seen>,
    conflicts: AtomicUsize,
    deliveries: AtomicUsize,
}

impl Recorder {
    fn record(&self, c: &Command) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap();
        let key = (c.saga_id, c.step.clone(), c.phase, c.attempt);
        let value = (c.command_id.clone(), c.payload.clone());
        if let Some(previous) = seen.get(&key) {
            if *previous != value {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            seen.insert(key, value);
        }
    }
}

fn order_no(c: &Command) -> u64 {
    c.payload
        .get("order")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
}

/// Saga `n` fails at `charge` when n % 7 == 0 and at `ship` when n % 7 == 1.
fn expected(n: u64) -> SagaStatus {
    if n % 7 <= 1 {
        SagaStatus::Compensated
    } else {
        SagaStatus::Completed
    }
}

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
        (d, Duration::from_millis(2 + n % 10))
    })
}

async fn start_many(port: u16, range: std::ops::Range<u64>) -> Vec<(u64, Uuid)> {
    let mut ids = Vec::new();
    for n in range {
        let url = format!("http://127.0.0.1:{port}/v1/sagas/crash-flow");
        let body = json!({"input": {"n": n}, "key": format!("order-{n}")});
        let (status, text) = http("POST", &url, Some(&body), &[])
            .await
            .expect("service answers");
        assert!(status == 201 || status == 200, "{status} {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        ids.push((n, v["id"].as_str().unwrap().parse().unwrap()));
    }
    ids
}

async fn terminal_count(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM sagas WHERE status IN ('completed', 'compensated', 'failed')",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

/// Every saga ended as it would have without faults, with one terminal record each.
async fn check_outcomes(store: &Store, ids: &[(u64, Uuid)], rec: &Recorder) {
    let total = ids.len() as i64;
    eventually("every saga to finish", Duration::from_secs(180), || async {
        (terminal_count(store).await == total).then_some(())
    })
    .await;
    for (n, id) in ids {
        let inst = saga(store, *id).await;
        if inst.status != expected(*n) {
            let seen: Vec<String> = rec
                .seen
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.0 == *id)
                .map(|k| format!("{}:{:?}#{}", k.1, k.2, k.3))
                .collect();
            eprintln!("participant saw for saga {n}: {seen:?}");
        }
        assert_eq!(
            inst.status,
            expected(*n),
            "saga {n} ({id}) ended {:?}: {:?}\n{:#?}",
            inst.status,
            inst.failure,
            timeline(store, *id)
                .await
                .iter()
                .map(|h| format!(
                    "{} {:?} {:?} {:?} {}",
                    h.kind, h.step, h.phase, h.attempt, h.detail
                ))
                .collect::<Vec<_>>()
        );
        let ends = timeline(store, *id)
            .await
            .iter()
            .filter(|h| h.kind == "completed" || h.kind == "compensated")
            .count();
        assert_eq!(ends, 1, "saga {n} ended {ends} times");
    }
    assert_eq!(
        rec.conflicts.load(Ordering::Relaxed),
        0,
        "a step attempt was sent twice with different contents"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&store.pool)
            .await
            .unwrap(),
        0,
        "outbox drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_run_loses_nothing_and_doubles_nothing() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-crash"));
    let store = db.store().await;
    let rec = Arc::new(Recorder::default());
    let p = participants(
        &settings,
        load_defs(&settings.runtime.sagas_dir),
        policy(rec.clone()),
    );

    let mut first = Process::start(&settings);
    first.wait_ready().await;
    let ids = start_many(first.port, 0..150).await;
    eventually(
        "some sagas to finish before the crash",
        Duration::from_secs(60),
        || async { (terminal_count(&store).await >= 20).then_some(()) },
    )
    .await;
    first.kill9();
    let in_flight = 150 - terminal_count(&store).await;
    assert!(in_flight > 0, "the crash should hit sagas in flight");

    let mut second = Process::start(&settings);
    second.wait_ready().await;
    check_outcomes(&store, &ids, &rec).await;
    p.stop().await;
    assert!(second.terminate().success(), "graceful shutdown exits 0");
}

async fn two_replicas(stop_first: impl FnOnce(&mut Process), mock: bool) {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &repo_path("tests/sagas-crash"));
    let mock = mock.then(|| mock_broker(&mut settings));
    let store = db.store().await;
    let rec = Arc::new(Recorder::default());
    let p = participants(
        &settings,
        load_defs(&settings.runtime.sagas_dir),
        policy(rec.clone()),
    );

    let mut a = Process::start(&settings);
    let mut b = Process::start(&settings);
    a.wait_ready().await;
    b.wait_ready().await;
    let mut ids = start_many(a.port, 0..60).await;
    ids.extend(start_many(b.port, 60..120).await);
    eventually("some sagas to finish", Duration::from_secs(60), || async {
        (terminal_count(&store).await >= 20).then_some(())
    })
    .await;
    stop_first(&mut a);
    ids.extend(start_many(b.port, 120..160).await);
    check_outcomes(&store, &ids, &rec).await;
    p.stop().await;
    assert!(b.terminate().success());
    drop(mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_stopped_hands_its_work_to_the_other() {
    // SIGTERM: the stopping replica finishes its batch, commits, and leaves the group,
    // so the survivor is assigned its partitions and takes over the outbox and timers.
    two_replicas(|a| assert!(a.terminate().success()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_killed_the_other_takes_over() {
    // SIGKILL: the survivor takes over the outbox (advisory lock) and timers at once, and
    // the dead member's reply partitions once the group notices its missed heartbeats.
    // tansu 0.6 never reassigns a dead member's partitions while others stay (a member
    // re-joining a formed group gets its old assignment back), so this test runs on
    // librdkafka's mock cluster, which expires members after `session.timeout.ms` as
    // Apache Kafka does. The processes still talk to it over TCP.
    two_replicas(Process::kill9, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_paused_for_ten_seconds_under_load_loses_nothing() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &repo_path("tests/sagas-crash"));
    // Group sessions outlive the pause (as they would a broker GC pause or a network
    // blip): tansu does not re-form a group whose members all missed their heartbeats.
    settings
        .kafka
        .properties
        .insert("session.timeout.ms".into(), "30000".into());
    settings
        .kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "1000".into());
    let store = db.store().await;
    let rec = Arc::new(Recorder::default());
    let p = participants(
        &settings,
        load_defs(&settings.runtime.sagas_dir),
        policy(rec.clone()),
    );
    let svc = Process::start(&settings);
    svc.wait_ready().await;

    let mut ids = start_many(svc.port, 0..60).await;
    eventually(
        "the first sagas to finish (groups joined)",
        Duration::from_secs(60),
        || async { (terminal_count(&store).await >= 5).then_some(()) },
    )
    .await;
    broker.pause();
    // Sagas can still be started while the broker is away: they wait in the outbox.
    ids.extend(start_many(svc.port, 60..100).await);
    let paused_at = std::time::Instant::now();
    eventually(
        "the pause to last 10 s",
        Duration::from_secs(15),
        || async { (paused_at.elapsed() >= Duration::from_secs(10)).then_some(()) },
    )
    .await;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert!(
        backlog > 0,
        "commands for sagas started during the pause wait in the outbox"
    );
    broker.resume();
    check_outcomes(&store, &ids, &rec).await;
    p.stop().await;
    drop(svc);
}

//! Supervision and crash points. `SAGAFLOW_FAULT` (src/runtime/supervise.rs) stops the
//! service process at an exact line: a panic in a loop must stop the process with its
//! cause; an abort (no unwinding, no cleanup, like SIGKILL there) at each window that
//! matters must leave nothing lost, doubled or stuck once the service restarts. Every
//! test also sends a message while the service is down and checks it was applied.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sagaflow::config::Settings;
use sagaflow::engine::SagaStatus;
use sagaflow::messaging::envelope::Record;
use sagaflow::messaging::kafka;
use sagaflow::store::Store;
use serde_json::json;
use support::held::*;
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    settings: Settings,
    store: Store,
    producer: FutureProducer,
    _db: TestDb,
    _broker: Broker,
}

impl World {
    async fn new() -> World {
        log_init();
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
        let store = db.store().await;
        let producer = kafka::producer(&settings.kafka).unwrap();
        World {
            settings,
            store,
            producer,
            _db: db,
            _broker: broker,
        }
    }

    /// The service, stopping at `fault` when given; its stderr goes to `log` if given.
    fn service(&self, fault: Option<&str>, log: Option<&std::path::Path>) -> Process {
        let port = free_port();
        let mut cmd = Process::command(&self.settings, port);
        if let Some(f) = fault {
            cmd.env("SAGAFLOW_FAULT", f);
        }
        match log {
            Some(path) => cmd.stderr(std::fs::File::create(path).unwrap()),
            None => cmd.stderr(Stdio::null()),
        };
        Process::spawn(cmd, port)
    }

    async fn trigger(&self, record: &Record) {
        send_to(&self.producer, record, 0).await;
    }

    /// One saga per key, each with exactly the commands `expected` in its timeline.
    async fn check(&self, keys: &[&str], expected: &[&str]) -> Vec<Uuid> {
        let mut ids = Vec::new();
        for key in keys {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE business_key = $1")
                .bind(key)
                .fetch_one(&self.store.pool)
                .await
                .unwrap();
            assert_eq!(n, 1, "sagas for {key}");
            let id = saga_by_key(&self.store, key).await.unwrap();
            assert_eq!(sent(&self.store, id).await, expected, "{key}");
            ids.push(id);
        }
        ids
    }

    async fn finish(&self, ids: &[Uuid]) {
        for id in ids {
            send_to(&self.producer, &done(&self.settings, *id, json!({})), 0).await;
        }
        for id in ids {
            wait_status(&self.store, *id, SagaStatus::Completed, WAIT).await;
        }
        let dead = read_topic(&self.settings, &self.settings.kafka.dead_letter_topic).await;
        assert!(dead.is_empty(), "{} dead letters", dead.len());
    }
}

fn quick_placed(settings: &Settings, key: &str) -> Record {
    cloud_event(
        topic(settings, "held.quick"),
        key,
        (&format!("quick-{key}"), "/tests/shop", "held.quick_placed"),
        &json!({"key": key}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loop_that_panics_stops_the_process_with_its_cause() {
    let w = World::new().await;
    for (point, task) in [
        ("consumer.batch", "consumer"),
        ("relay.round", "relay"),
        ("timers.round", "timers"),
    ] {
        let log =
            std::env::temp_dir().join(format!("sagaflow-{}-{point}.log", namespace(&w.settings)));
        let mut svc = w.service(Some(point), Some(&log));
        if point == "consumer.batch" {
            w.trigger(&order_placed(&w.settings, &format!("wake-{point}")))
                .await;
        }
        let status = svc.exited(WAIT).await;
        assert_eq!(status.code(), Some(70), "{point}: {status} (EX_SOFTWARE)");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("a supervised task panicked"),
            "{point}:\n{text}"
        );
        assert!(
            text.contains(&format!("injected fault at {point}")),
            "{text}"
        );
        assert!(text.contains(task), "{text}");
        let _ = std::fs::remove_file(&log);
    }
}

/// The consumer-group watchdog. `consumer.leave_group` makes the consumer leave its
/// group after its first batch and never rejoin: the state a broker pause left a
/// consumer in (docs/guarantees.md), here on demand. The process stops once
/// `consumer_wedged_after_s` passes, and the one started in its place applies what was
/// sent while the first was out of its group and while nothing ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_left_out_of_its_group_stops_the_process_and_a_fresh_one_catches_up() {
    let mut w = World::new().await;
    w.settings.runtime.consumer_wedged_after_s = 5;
    let log = std::env::temp_dir().join(format!(
        "sagaflow-{}-leave-group.log",
        namespace(&w.settings)
    ));
    let mut svc = w.service(Some("consumer.leave_group"), Some(&log));
    w.trigger(&order_placed(&w.settings, "k1")).await;
    wait_saga(&w.store, "k1").await;
    w.trigger(&order_placed(&w.settings, "k2")).await;
    let status = svc.exited(WAIT).await;
    assert_eq!(status.code(), Some(70), "{status} (EX_SOFTWARE)");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("left out of its consumer group"), "{text}");
    let _ = std::fs::remove_file(&log);
    w.trigger(&order_placed(&w.settings, "k3")).await;
    let svc = w.service(None, None);
    svc.wait_ready().await;
    wait_saga(&w.store, "k3").await;
    wait_saga(&w.store, "k2").await;
    let ids = w.check(&["k1", "k2", "k3"], &["cmd:wait#1"]).await;
    w.finish(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_commit_before_the_offset_is_stored() {
    let w = World::new().await;
    let mut svc = w.service(Some("consumer.after_commit:abort"), None);
    w.trigger(&order_placed(&w.settings, "k1")).await;
    assert!(!svc.exited(WAIT).await.success());
    // Committed, offset not stored: k1 is redelivered after the restart.
    w.trigger(&order_placed(&w.settings, "k2")).await;
    let svc = w.service(None, None);
    svc.wait_ready().await;
    wait_saga(&w.store, "k2").await;
    let ids = w.check(&["k1", "k2"], &["cmd:wait#1"]).await;
    w.finish(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_broker_acknowledged_before_the_outbox_delete() {
    let w = World::new().await;
    let mut svc = w.service(Some("relay.after_ack:abort"), None);
    w.trigger(&order_placed(&w.settings, "k1")).await;
    assert!(!svc.exited(WAIT).await.success());
    w.trigger(&order_placed(&w.settings, "k2")).await;
    let svc = w.service(None, None);
    svc.wait_ready().await;
    let k2 = wait_saga(&w.store, "k2").await;
    let ids = w.check(&["k1", "k2"], &["cmd:wait#1"]).await;
    // k1's command went out again after the restart: the same command (one ce_id),
    // which participants dedupe; never a second, different one.
    let commands = topic(&w.settings, "held.commands");
    let ce_ids = eventually("both sagas' commands on the topic", WAIT, || async {
        let all = read_topic(&w.settings, &commands).await;
        let of = |id: Uuid| -> Vec<String> {
            all.iter()
                .filter(|m| header(m, "ce_sagaid") == Some(id.to_string()))
                .filter_map(|m| header(m, "ce_id"))
                .collect()
        };
        let (k1, k2) = (of(ids[0]), of(k2));
        (k1.len() >= 2 && !k2.is_empty()).then_some((k1, k2))
    })
    .await;
    assert!(
        ce_ids.0.iter().all(|id| *id == ce_ids.0[0]),
        "{:?}",
        ce_ids.0
    );
    w.finish(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_in_the_middle_of_a_batch() {
    let w = World::new().await;
    let keys = ["k1", "k2", "k3", "k4"];
    let mut svc = w.service(None, None);
    svc.wait_ready().await;
    for k in keys {
        w.trigger(&order_placed(&w.settings, k)).await;
    }
    let ids = {
        for k in keys {
            wait_saga(&w.store, k).await;
        }
        w.check(&keys, &["cmd:wait#1"]).await
    };
    svc.terminate();
    // The replies wait on one partition while the service is down, so the first batch
    // after the start holds them all, and the process dies with half of it staged.
    for id in &ids {
        send_to(&w.producer, &done(&w.settings, *id, json!({})), 0).await;
    }
    let mut svc = w.service(Some("apply.mid_batch:abort"), None);
    assert!(!svc.exited(WAIT).await.success());
    for id in &ids {
        let status = saga(&w.store, *id).await.status;
        assert_eq!(
            status,
            SagaStatus::Running,
            "nothing of the batch committed"
        );
    }
    w.trigger(&order_placed(&w.settings, "k5")).await;
    let svc = w.service(None, None);
    svc.wait_ready().await;
    for id in &ids {
        wait_status(&w.store, *id, SagaStatus::Completed, WAIT).await;
        let replies = timeline(&w.store, *id)
            .await
            .iter()
            .filter(|h| h.kind == "reply_received")
            .count();
        assert_eq!(replies, 1);
    }
    let k5 = wait_saga(&w.store, "k5").await;
    w.finish(&[k5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_a_timers_transaction() {
    let w = World::new().await;
    let mut svc = w.service(Some("timers.after_commit:abort"), None);
    w.trigger(&quick_placed(&w.settings, "q1")).await;
    // wait#1 times out after 1 s; the process dies right after that timer committed.
    assert!(!svc.exited(WAIT).await.success());
    w.trigger(&quick_placed(&w.settings, "q2")).await;
    let svc = w.service(None, None);
    svc.wait_ready().await;
    for key in ["q1", "q2"] {
        let id = wait_saga(&w.store, key).await;
        // Nobody answers: three attempts, each sent once, then the saga rolls back.
        let inst = eventually(&format!("{key} to end"), WAIT, || async {
            let inst = saga(&w.store, id).await;
            inst.status.is_terminal().then_some(inst)
        })
        .await;
        assert_eq!(inst.status, SagaStatus::Compensated, "{key}");
        assert_eq!(
            sent(&w.store, id).await,
            ["cmd:wait#1", "cmd:wait#2", "cmd:wait#3"],
            "{key}"
        );
    }
    drop(svc);
}

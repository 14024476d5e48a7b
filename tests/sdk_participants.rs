//! Each participant library in sdks/ (Python, TypeScript, Java, Go) end to end: its
//! example program (protocol/README.md, "The example services") plays every participant
//! of the example sagas, and sagaflow drives them over Apache Kafka. The outputs are
//! built from that library's replies; nothing times out, is retried or dead-lettered.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sagaflow::config::Settings;
use sagaflow::engine::SagaStatus;
use serde_json::{Value as Json, json};
use support::*;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(90);

/// A library's example program as a child process, killed when dropped.
struct Example(Child, &'static str);

impl Example {
    fn start(
        lang: &'static str,
        settings: &Settings,
        fail_steps: &str,
        database: Option<&str>,
    ) -> Example {
        let script: PathBuf = repo_path(&format!("sdks/{lang}/run-example"));
        assert!(
            script.exists(),
            "{} is missing: the {lang} library has no example program",
            script.display()
        );
        let topics = command_topics(&load_defs(&settings.runtime.sagas_dir));
        let ns = namespace(settings);
        let mut cmd = Command::new(&script);
        cmd.current_dir(repo_path(&format!("sdks/{lang}")))
            .env("BOOTSTRAP_SERVERS", &settings.kafka.bootstrap_servers)
            .env(
                "GROUP_ID",
                format!("{lang}-example-{}", Uuid::new_v4().simple()),
            )
            .env("TOPICS", topics.join(","))
            .env("FAIL_STEPS", fail_steps)
            .env("SOURCE", format!("/example-{lang}"))
            .env(
                "DEAD_LETTER_TOPIC",
                format!("{ns}.participants.dead-letter"),
            )
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null());
        match database {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (run sdks/{lang}/check first)",
                script.display()
            )
        });
        Example(child, lang)
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("the {} example exited early: {status}", self.1);
        }
    }

    /// SIGTERM, then the exit status within 20 s: a graceful stop exits 0.
    fn stop(mut self) {
        signal(self.0.id(), "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(
                    status.success(),
                    "the {} example exited with {status} on SIGTERM",
                    self.1
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the {} example did not stop within 20 s of SIGTERM",
                self.1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example_input(settings: &Settings, saga: &str, id_field: &str, id: &str) -> Json {
    let def = load_defs(&settings.runtime.sagas_dir)
        .into_iter()
        .find(|d| d.name == saga)
        .unwrap();
    let mut input = def.example_input().cloned().unwrap();
    input[id_field] = json!(id);
    input
}

/// The value the example services return for `field` (protocol/README.md).
fn value(field: &str, saga: Uuid) -> Json {
    json!(format!("{field}-{}", &saga.to_string()[..8]))
}

async fn assert_nothing_dead_lettered(settings: &Settings) {
    let dead = read_topic(settings, &settings.kafka.dead_letter_topic).await;
    assert!(dead.is_empty(), "{} replies were dead-lettered", dead.len());
}

/// order-fulfilment and trip-booking (a parallel group) complete with outputs built
/// from the library's replies, every step on its first attempt. PostgreSQL store.
async fn completes_the_example_sagas(lang: &'static str) {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("sagas"));
    let svc = InProcess::start(settings.clone()).await;
    let mut example = Example::start(lang, &settings, "", Some(&db.url));
    let store = db.store().await;
    let base = svc.url("");

    let order_input = example_input(
        &settings,
        "order-fulfilment",
        "order_id",
        &format!("o-{lang}"),
    );
    let trip_input = example_input(&settings, "trip-booking", "trip_id", &format!("t-{lang}"));
    let order = start_saga(&base, "order-fulfilment", order_input).await;
    let trip = start_saga(&base, "trip-booking", trip_input).await;
    let order_done = wait_status(&store, order, SagaStatus::Completed, LIMIT).await;
    let trip_done = wait_status(&store, trip, SagaStatus::Completed, LIMIT).await;
    example.assert_running();

    assert_eq!(
        order_done.output,
        Some(
            json!({"order_id": format!("o-{lang}"), "payment_id": value("payment_id", order),
                    "tracking_number": value("tracking_number", order)})
        )
    );
    assert_eq!(
        trip_done.output,
        Some(
            json!({"trip_id": format!("t-{lang}"), "flight": value("booking_ref", trip),
                    "hotel": value("reservation_id", trip), "car": value("rental_id", trip)})
        )
    );
    assert_eq!(
        sent(&store, order).await,
        [
            "cmd:reserve_stock#1",
            "cmd:authorize_payment#1",
            "cmd:capture_payment#1",
            "cmd:ship_order#1"
        ]
    );
    let mut trip_sent = sent(&store, trip).await;
    trip_sent.sort();
    assert_eq!(
        trip_sent,
        [
            "cmd:book_car#1",
            "cmd:book_flight#1",
            "cmd:book_hotel#1",
            "cmd:confirm_trip#1"
        ]
    );
    // Every reply came from this library's example.
    for id in [order, trip] {
        for h in timeline(&store, id)
            .await
            .into_iter()
            .filter(|h| h.kind == "reply_received")
        {
            assert_eq!(
                h.detail["source"],
                json!(format!("/example-{lang}")),
                "{:?}",
                h.detail
            );
        }
    }
    assert_nothing_dead_lettered(&settings).await;
    example.stop();
    svc.stop().await;
}

/// capture_payment (the pivot) fails: the two steps before it are compensated, newest
/// first, and the library ran both compensation handlers. In-memory store.
async fn failure_compensates_in_reverse_order(lang: &'static str) {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("sagas"));
    let svc = InProcess::start(settings.clone()).await;
    let mut example = Example::start(lang, &settings, "capture_payment", None);
    let store = db.store().await;

    let input = example_input(
        &settings,
        "order-fulfilment",
        "order_id",
        &format!("f-{lang}"),
    );
    let id = start_saga(&svc.url(""), "order-fulfilment", input).await;
    let inst = wait_status(&store, id, SagaStatus::Compensated, LIMIT).await;
    example.assert_running();
    let failure = inst.failure.expect("the saga records why it compensated");
    assert_eq!(failure.step.as_deref(), Some("capture_payment"));
    assert!(
        failure.reason.contains("payments.capture_rejected"),
        "{failure:?}"
    );
    assert!(
        failure.reason.contains("capture_payment failed on purpose"),
        "{failure:?}"
    );
    assert_eq!(
        sent(&store, id).await,
        [
            "cmd:reserve_stock#1",
            "cmd:authorize_payment#1",
            "cmd:capture_payment#1",
            "comp:authorize_payment#1",
            "comp:reserve_stock#1"
        ]
    );
    let undone: Vec<(String, Json, Json)> = timeline(&store, id)
        .await
        .into_iter()
        .filter(|h| h.kind == "reply_received" && h.phase.as_deref() == Some("compensation"))
        .map(|h| {
            (
                h.step.unwrap_or_default(),
                h.detail["type"].clone(),
                h.detail["payload"].clone(),
            )
        })
        .collect();
    assert_eq!(
        undone,
        [
            (
                "authorize_payment".into(),
                json!("payments.authorization_voided"),
                json!({"undone": true})
            ),
            (
                "reserve_stock".into(),
                json!("inventory.stock_released"),
                json!({"undone": true})
            ),
        ]
    );
    assert_nothing_dead_lettered(&settings).await;
    example.stop();
    svc.stop().await;
}

macro_rules! library {
    ($lang:ident) => {
        mod $lang {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn completes_the_example_sagas() {
                super::completes_the_example_sagas(stringify!($lang)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn failure_compensates_in_reverse_order() {
                super::failure_compensates_in_reverse_order(stringify!($lang)).await;
            }
        }
    };
}

library!(python);
library!(typescript);
library!(java);
library!(go);

//! Failure paths of the runtime over a real PostgreSQL and a real broker: timeouts,
//! unknown outcomes, failing compensations and operator repair, parallel groups,
//! conditional steps, abort around the pivot, and the example sagas' happy paths.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sagaflow::config::Settings;
use sagaflow::engine::{FailurePhase, Phase, SagaStatus, StepStatus};
use sagaflow::messaging::kafka;
use sagaflow::participant::{Command, Decision, Policy};
use sagaflow::store::Store;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// One test's world: database, broker, service, participants.
struct Rig {
    settings: Settings,
    svc: InProcess,
    store: Store,
    p: Participants,
    _broker: Broker,
    _db: TestDb,
}

impl Rig {
    async fn start(dir: &Path, policy: Policy) -> Rig {
        log_init();
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let settings = settings(&db, &broker, dir);
        let svc = InProcess::start(settings.clone()).await;
        let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
        let store = db.store().await;
        Rig {
            settings,
            svc,
            store,
            p,
            _broker: broker,
            _db: db,
        }
    }

    /// The fast sagas, after a warm-up saga has completed: from then on the service's
    /// consumer and the participants are in their groups, so short step timeouts only
    /// measure the saga under test.
    async fn fast(policy: Policy) -> Rig {
        let rig = Rig::start(&repo_path("tests/sagas-fast"), policy).await;
        let id = rig.start_saga("fast-warmup", json!({})).await;
        wait_status(
            &rig.store,
            id,
            SagaStatus::Completed,
            Duration::from_secs(60),
        )
        .await;
        rig
    }

    async fn start_saga(&self, name: &str, input: Value) -> Uuid {
        start_saga(&self.svc.url(""), name, input).await
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> (u16, String, String) {
        raw_post(&self.svc.url(path), body).await
    }

    async fn stop(self) {
        self.p.stop().await;
        self.svc.stop().await;
    }
}

/// POST returning status, content type and body (the support client drops headers).
async fn raw_post(url: &str, body: Option<&Value>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// A policy from a function of the command (answered at once).
fn policy(f: impl Fn(&Command) -> Decision + Send + Sync + 'static) -> Policy {
    Arc::new(move |c| (f(c), Duration::ZERO))
}

fn always(decision: Decision) -> Policy {
    Arc::new(move |_c| (decision.clone(), Duration::ZERO))
}

fn order(c: &Command) -> &str {
    c.payload["order"].as_str().unwrap_or_default()
}

/// `kind#attempt` of one step's timeline entries, in order.
async fn step_timeline(store: &Store, id: Uuid, step: &str) -> Vec<String> {
    timeline(store, id)
        .await
        .into_iter()
        .filter(|h| h.step.as_deref() == Some(step))
        .map(|h| match h.attempt {
            Some(a) => format!("{}#{a}", h.kind),
            None => h.kind,
        })
        .collect()
}

async fn kinds(store: &Store, id: Uuid) -> Vec<String> {
    timeline(store, id)
        .await
        .into_iter()
        .map(|h| h.kind)
        .collect()
}

/// Waits until `sent(...)` has reached at least `len` entries, returning them.
async fn sent_len(store: &Store, id: Uuid, len: usize) -> Vec<String> {
    eventually(&format!("{len} messages sent by {id}"), WAIT, || async {
        let s = sent(store, id).await;
        (s.len() >= len).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timed_out_attempt_is_retried_and_then_succeeds() {
    let rig = Rig::fast(policy(|c| {
        if c.step == "reserve" && c.phase == Phase::Command && c.attempt == 1 {
            Decision::Silence
        } else {
            Decision::Success
        }
    }))
    .await;
    let id = rig
        .start_saga("fast-linear", json!({"order_id": "t-1"}))
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.output, Some(json!({"order_id": "t-1"})));
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:reserve#2",
            "cmd:charge#1",
            "cmd:commit#1",
            "cmd:notify#1"
        ]
    );
    assert_eq!(
        step_timeline(&rig.store, id, "reserve").await,
        [
            "command_sent#1",
            "timed_out#1",
            "retry_scheduled#2",
            "command_sent#2",
            "reply_received#2",
            "step_succeeded"
        ]
    );
    assert_eq!(inst.steps[0].forward.attempt, 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_outcome_is_compensated_with_the_earlier_steps() {
    let rig = Rig::fast(policy(|c| {
        if c.step == "charge" && c.phase == Phase::Command {
            Decision::Silence
        } else {
            Decision::Success
        }
    }))
    .await;
    let id = rig
        .start_saga("fast-linear", json!({"order_id": "u-1"}))
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Compensated, WAIT).await;
    // charge allows 2 attempts; both time out, then charge (outcome unknown) and
    // reserve are compensated, newest first; the pivot is never reached.
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "cmd:charge#2",
            "comp:charge#1",
            "comp:reserve#1"
        ]
    );
    assert_eq!(inst.steps[1].forward.status, StepStatus::TimedOut);
    assert_eq!(inst.steps[1].compensation.status, StepStatus::Succeeded);
    assert_eq!(inst.steps[0].compensation.status, StepStatus::Succeeded);
    assert_eq!(inst.steps[2].forward.status, StepStatus::Pending);
    let failure = inst.failure.unwrap();
    assert_eq!(failure.phase, FailurePhase::Forward);
    assert_eq!(failure.step.as_deref(), Some("charge"));
    assert!(failure.reason.contains("no reply"), "{}", failure.reason);
    assert_eq!(
        step_timeline(&rig.store, id, "charge").await,
        [
            "command_sent#1",
            "timed_out#1",
            "retry_scheduled#2",
            "command_sent#2",
            "timed_out#2",
            "step_failed",
            "compensating",
            "compensation_sent#1",
            "reply_received#1",
            "step_compensated"
        ]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_compensation_waits_for_an_operator_retry() {
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let rig = Rig::fast(policy(move |c| match (c.step.as_str(), c.phase) {
        ("charge", Phase::Command) => Decision::Failure { retryable: false },
        ("charge", Phase::Compensation) if !h.load(Ordering::SeqCst) => {
            Decision::Failure { retryable: true }
        }
        _ => Decision::Success,
    }))
    .await;
    let id = rig
        .start_saga("fast-linear", json!({"order_id": "c-1"}))
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Failed, WAIT).await;
    // The compensation of charge is tried 3 times; reserve's is not sent while the
    // newer one is unresolved.
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "comp:charge#1",
            "comp:charge#2",
            "comp:charge#3"
        ]
    );
    let failure = inst.failure.clone().unwrap();
    assert_eq!(failure.phase, FailurePhase::Compensation);
    assert_eq!(failure.step.as_deref(), Some("charge"));
    assert!(
        failure.reason.starts_with("rollback incomplete"),
        "{}",
        failure.reason
    );
    assert_eq!(inst.steps[1].compensation.status, StepStatus::Failed);
    assert_eq!(inst.steps[0].compensation.status, StepStatus::Pending);

    // Abort is refused while a compensation has failed: retry is the way on.
    let (status, ctype, body) = rig.post(&format!("/v1/sagas/{id}/abort"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ctype, "application/problem+json");

    healed.store(true, Ordering::SeqCst);
    let (status, _, body) = rig.post(&format!("/v1/sagas/{id}/retry"), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "compensating");
    let inst = wait_status(&rig.store, id, SagaStatus::Compensated, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "comp:charge#1",
            "comp:charge#2",
            "comp:charge#3",
            "comp:charge#4",
            "comp:reserve#1"
        ]
    );
    assert_eq!(inst.failure, None);
    assert!(
        kinds(&rig.store, id)
            .await
            .contains(&"operator_retry".to_owned())
    );
    // Nothing is left to retry.
    let (status, ctype, body) = rig.post(&format!("/v1/sagas/{id}/retry"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ctype, "application/problem+json");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_group_failure_waits_for_siblings_and_compensates_in_settling_order() {
    // flight fails at once, hotel succeeds after 250 ms, car after 600 ms: they settle
    // prepare, flight, hotel, car, and are compensated the other way round.
    let p: Policy = Arc::new(|c| match (c.step.as_str(), c.phase) {
        ("flight", Phase::Command) => (Decision::Failure { retryable: false }, Duration::ZERO),
        ("hotel", Phase::Command) => (Decision::Success, Duration::from_millis(250)),
        ("car", Phase::Command) => (Decision::Success, Duration::from_millis(600)),
        _ => (Decision::Success, Duration::ZERO),
    });
    let rig = Rig::fast(p).await;
    let id = rig.start_saga("fast-parallel", json!({})).await;
    let inst = wait_status(&rig.store, id, SagaStatus::Compensated, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:prepare#1",
            "cmd:flight#1",
            "cmd:hotel#1",
            "cmd:car#1",
            "comp:car#1",
            "comp:hotel#1",
            "comp:flight#1",
            "comp:prepare#1"
        ]
    );
    let tl = timeline(&rig.store, id).await;
    let pos = |kind: &str, step: &str| {
        tl.iter()
            .position(|h| h.kind == kind && h.step.as_deref() == Some(step))
            .unwrap_or_else(|| panic!("no {kind} for {step}"))
    };
    let first_comp = tl
        .iter()
        .position(|h| h.kind == "compensation_sent")
        .unwrap();
    assert!(pos("step_failed", "flight") < pos("step_succeeded", "hotel"));
    assert!(pos("step_succeeded", "hotel") < pos("step_succeeded", "car"));
    assert!(
        pos("step_succeeded", "car") < first_comp,
        "compensation began before the slow sibling settled"
    );
    assert_eq!(
        inst.steps[4].forward.status,
        StepStatus::Pending,
        "confirm never ran"
    );
    // Compensations render with the replies of the steps that succeeded.
    let car_comp = tl
        .iter()
        .find(|h| h.kind == "compensation_sent" && h.step.as_deref() == Some("car"))
        .unwrap();
    assert!(
        car_comp.detail["payload"]["ref"].is_string(),
        "{car_comp:?}"
    );
    let flight_comp = tl
        .iter()
        .find(|h| h.kind == "compensation_sent" && h.step.as_deref() == Some("flight"))
        .unwrap();
    assert_eq!(flight_comp.detail["payload"]["ref"], Value::Null);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipped_conditional_step_is_never_sent_nor_compensated() {
    let rig = Rig::fast(policy(|c| {
        if c.step == "charge" && c.phase == Phase::Command {
            Decision::Failure { retryable: false }
        } else {
            Decision::Success
        }
    }))
    .await;
    let skipped = rig
        .start_saga("fast-conditional", json!({"gift": false}))
        .await;
    let taken = rig
        .start_saga("fast-conditional", json!({"gift": true}))
        .await;
    let inst = wait_status(&rig.store, skipped, SagaStatus::Compensated, WAIT).await;
    assert_eq!(
        sent(&rig.store, skipped).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "comp:charge#1",
            "comp:reserve#1"
        ]
    );
    assert_eq!(inst.steps[1].forward.status, StepStatus::Skipped);
    assert_eq!(inst.steps[1].compensation.status, StepStatus::Pending);
    assert_eq!(
        step_timeline(&rig.store, skipped, "gift").await,
        ["step_skipped"]
    );
    // The same saga with the condition true: the step runs and is compensated.
    wait_status(&rig.store, taken, SagaStatus::Compensated, WAIT).await;
    assert_eq!(
        sent(&rig.store, taken).await,
        [
            "cmd:reserve#1",
            "cmd:gift#1",
            "cmd:charge#1",
            "comp:charge#1",
            "comp:gift#1",
            "comp:reserve#1"
        ]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_rolls_back_before_the_pivot_and_is_refused_from_it_on() {
    // Order "before": charge never answers, so the saga is parked before the pivot.
    // Order "after": commit (the pivot) and notify answer slowly.
    let p: Policy = Arc::new(|c| match (order(c), c.step.as_str(), c.phase) {
        ("before", "charge", Phase::Command) => (Decision::Silence, Duration::ZERO),
        ("after", "commit" | "notify", Phase::Command) => {
            (Decision::Success, Duration::from_millis(700))
        }
        _ => (Decision::Success, Duration::ZERO),
    });
    let rig = Rig::fast(p).await;

    let before = rig
        .start_saga("fast-linear", json!({"order_id": "before"}))
        .await;
    assert_eq!(
        sent_len(&rig.store, before, 2).await,
        ["cmd:reserve#1", "cmd:charge#1"]
    );
    let (status, _, body) = rig
        .post(
            &format!("/v1/sagas/{before}/abort"),
            Some(&json!({"reason": "customer cancelled"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "compensating");
    let inst = wait_status(&rig.store, before, SagaStatus::Compensated, WAIT).await;
    // The in-flight charge is waited for (it times out, and is not retried), then
    // both steps are compensated, newest first.
    assert_eq!(
        sent(&rig.store, before).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "comp:charge#1",
            "comp:reserve#1"
        ]
    );
    assert_eq!(inst.steps[1].forward.status, StepStatus::TimedOut);
    assert!(
        inst.failure.unwrap().reason.contains("customer cancelled"),
        "abort reason kept"
    );
    let k = kinds(&rig.store, before).await;
    assert!(k.contains(&"operator_abort".to_owned()), "{k:?}");
    // Aborting again is harmless.
    let (status, _, body) = rig.post(&format!("/v1/sagas/{before}/abort"), None).await;
    assert_eq!(status, 200, "{body}");

    let after = rig
        .start_saga("fast-linear", json!({"order_id": "after"}))
        .await;
    // The pivot is in flight.
    sent_len(&rig.store, after, 3).await;
    let (status, ctype, body) = rig.post(&format!("/v1/sagas/{after}/abort"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ctype, "application/problem+json");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 409);
    assert!(
        problem["type"].as_str().unwrap().ends_with("/not-allowed"),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("in flight"),
        "{problem}"
    );
    // Past the pivot.
    assert_eq!(
        sent_len(&rig.store, after, 4).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "cmd:commit#1",
            "cmd:notify#1"
        ]
    );
    let (status, ctype, body) = rig.post(&format!("/v1/sagas/{after}/abort"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ctype, "application/problem+json");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("passed its pivot"),
        "{problem}"
    );
    // Refused aborts change nothing: the saga completes.
    wait_status(&rig.store, after, SagaStatus::Completed, WAIT).await;
    assert_eq!(sent(&rig.store, after).await.len(), 4);
    assert!(
        !kinds(&rig.store, after)
            .await
            .contains(&"operator_abort".to_owned())
    );
    // And a completed saga cannot be aborted either.
    let (status, _, body) = rig.post(&format!("/v1/sagas/{after}/abort"), None).await;
    assert_eq!(status, 409, "{body}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_order_fulfilment_completes() {
    let rig = Rig::start(&repo_path("sagas"), always(Decision::Success)).await;
    let id = rig
        .start_saga(
            "order-fulfilment",
            json!({"order_id": "o-7", "customer_id": "c-7", "amount": 30.0, "currency": "EUR",
                   "items": [{"sku": "MUG", "quantity": 2}]}),
        )
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve_stock#1",
            "cmd:authorize_payment#1",
            "cmd:capture_payment#1",
            "cmd:ship_order#1"
        ]
    );
    let out = inst.output.unwrap();
    assert_eq!(out["order_id"], "o-7");
    assert!(out["tracking_number"].is_string(), "{out}");
    rig.stop().await;
}

fn trip(car: Option<Value>) -> Value {
    let mut v = json!({"trip_id": "trip-1", "traveller_id": "tr-1",
                       "flight": {"from": "AMS", "to": "LIS"}, "hotel": {"name": "Tejo"}});
    if let Some(car) = car {
        v["car"] = car;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_trip_booking_completes_with_a_car() {
    let rig = Rig::start(&repo_path("sagas"), always(Decision::Success)).await;
    let id = rig
        .start_saga("trip-booking", trip(Some(json!({"class": "compact"}))))
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:book_flight#1",
            "cmd:book_hotel#1",
            "cmd:book_car#1",
            "cmd:confirm_trip#1"
        ]
    );
    let out = inst.output.unwrap();
    assert_eq!(out["trip_id"], "trip-1");
    for field in ["flight", "hotel", "car"] {
        assert!(out[field].is_string(), "{out}");
    }
    rig.stop().await;
}

/// trip-booking's schema requires `car` and `book_car` has no `when:`, so a trip
/// without a car cannot be started: the start is refused with 422 and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_trip_booking_without_a_car_is_refused_by_its_schema() {
    let rig = Rig::start(&repo_path("sagas"), always(Decision::Success)).await;
    let (status, ctype, body) = rig
        .post(
            "/v1/sagas/trip-booking",
            Some(&json!({ "input": trip(None) })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert!(body.contains("car"), "{body}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    rig.stop().await;
}

async fn produce_signup(settings: &Settings, id: &str, data: Value) {
    let producer = kafka::producer(&settings.kafka).unwrap();
    let record = cloud_event(
        topic(settings, "accounts.events"),
        id,
        (
            &Uuid::new_v4().to_string(),
            "/accounts",
            "accounts.signup_completed",
        ),
        &data,
    );
    kafka::send(&producer, &record, Duration::from_secs(10))
        .await
        .unwrap();
}

async fn saga_by_key(store: &Store, key: &str) -> Uuid {
    eventually(&format!("a saga with business key {key}"), WAIT, || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM sagas WHERE business_key = $1")
            .bind(key)
            .fetch_optional(&store.pool)
            .await
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_subscription_signup_is_started_by_its_trigger() {
    let rig = Rig::start(&repo_path("sagas"), always(Decision::Success)).await;
    produce_signup(
        &rig.settings,
        "acc-basic",
        json!({"account_id": "acc-basic", "email": "b@example.com"}),
    )
    .await;
    produce_signup(
        &rig.settings,
        "acc-premium",
        json!({"account_id": "acc-premium", "email": "p@example.com", "plan": "premium",
               "address": {"city": "Lisbon"}}),
    )
    .await;

    let basic = saga_by_key(&rig.store, "acc-basic").await;
    let inst = wait_status(&rig.store, basic, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.input["plan"], "basic", "trigger input default applied");
    assert_eq!(
        sent(&rig.store, basic).await,
        [
            "cmd:create_billing_account#1",
            "cmd:start_subscription#1",
            "cmd:send_welcome_email#1"
        ]
    );
    assert_eq!(inst.steps[2].forward.status, StepStatus::Skipped);
    let out = inst.output.unwrap();
    assert_eq!(out["account_id"], "acc-basic");
    assert!(out["subscription_id"].is_string(), "{out}");

    let premium = saga_by_key(&rig.store, "acc-premium").await;
    wait_status(&rig.store, premium, SagaStatus::Completed, WAIT).await;
    assert_eq!(
        sent(&rig.store, premium).await,
        [
            "cmd:create_billing_account#1",
            "cmd:start_subscription#1",
            "cmd:send_welcome_gift#1",
            "cmd:send_welcome_email#1"
        ]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_after_the_pivot_exhausted_is_retried_forward_by_an_operator() {
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let rig = Rig::fast(policy(move |c| {
        if c.step == "notify" && !h.load(Ordering::SeqCst) {
            Decision::Failure { retryable: true }
        } else {
            Decision::Success
        }
    }))
    .await;
    let id = rig
        .start_saga("fast-linear", json!({"order_id": "p-1"}))
        .await;
    let inst = wait_status(&rig.store, id, SagaStatus::Failed, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "cmd:commit#1",
            "cmd:notify#1",
            "cmd:notify#2",
            "cmd:notify#3"
        ]
    );
    let failure = inst.failure.unwrap();
    assert_eq!(failure.phase, FailurePhase::Forward);
    assert_eq!(failure.step.as_deref(), Some("notify"));
    // Past the pivot nothing is rolled back, and abort is refused.
    let (status, ctype, body) = rig.post(&format!("/v1/sagas/{id}/abort"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ctype, "application/problem+json");

    healed.store(true, Ordering::SeqCst);
    let (status, _, body) = rig.post(&format!("/v1/sagas/{id}/retry"), None).await;
    assert_eq!(status, 200, "{body}");
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.output, Some(json!({"order_id": "p-1"})));
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "cmd:commit#1",
            "cmd:notify#1",
            "cmd:notify#2",
            "cmd:notify#3",
            "cmd:notify#4"
        ]
    );
    rig.stop().await;
}

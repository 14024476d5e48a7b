//! The ways out of every situation that used to be a dead end, over a real PostgreSQL
//! and Apache Kafka: a late pivot success, a late compensation success, a step stuck in
//! a long backoff, and a failed saga past its pivot closed by hand.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::{Phase, SagaStatus, StepStatus};
use sagaflow::participant::{Command, Decision};
use sagaflow::store::Store;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Participants answer by the order id in the command, late where a test wants it.
fn decide(c: &Command) -> (Decision, Duration) {
    let order = c.payload["order"].as_str().unwrap_or_default();
    let late = Duration::from_millis(900);
    match (order, c.step.as_str(), c.phase) {
        ("late-pivot", "commit", Phase::Command) => (Decision::Success, late),
        ("late-comp", "commit", Phase::Command) => {
            (Decision::Failure { retryable: false }, Duration::ZERO)
        }
        ("late-comp", "hold", Phase::Compensation) => (Decision::Success, late),
        ("backoff", "ship", Phase::Command) => {
            (Decision::Failure { retryable: true }, Duration::ZERO)
        }
        ("closed", "ship", Phase::Command) => {
            (Decision::Failure { retryable: false }, Duration::ZERO)
        }
        _ => (Decision::Success, Duration::ZERO),
    }
}

struct Rig {
    svc: InProcess,
    store: Store,
    p: Participants,
    _broker: Broker,
    _db: TestDb,
}

impl Rig {
    async fn start() -> Rig {
        Rig::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut sagaflow::config::Settings)) -> Rig {
        log_init();
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let mut settings = settings(&db, &broker, &repo_path("tests/sagas-fast"));
        configure(&mut settings);
        let svc = InProcess::start(settings.clone()).await;
        let defs = load_defs(&settings.runtime.sagas_dir);
        let p = participants(&settings, defs, Arc::new(decide));
        let store = db.store().await;
        let rig = Rig {
            svc,
            store,
            p,
            _broker: broker,
            _db: db,
        };
        // Once a saga has completed, the consumer and the participants are in their
        // groups: the short timeouts below only measure the saga under test.
        let warm = rig.start_saga("fast-warmup").await;
        wait_status(
            &rig.store,
            warm,
            SagaStatus::Completed,
            Duration::from_secs(60),
        )
        .await;
        rig
    }

    async fn start_saga(&self, name: &str) -> Uuid {
        self.start_named(name, name).await
    }

    async fn order(&self, order: &str) -> Uuid {
        self.start_named("fast-operator", order).await
    }

    async fn start_named(&self, name: &str, order: &str) -> Uuid {
        let body = json!({ "input": {"order_id": order} });
        let url = self.svc.url(&format!("/v1/sagas/{name}"));
        let auth = [("Authorization", "Bearer w-secret")];
        let (status, text) = http("POST", &url, Some(&body), &auth).await.unwrap();
        assert_eq!(status, 201, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["id"].as_str().unwrap().parse().unwrap()
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = http("POST", &self.svc.url(path), body.as_ref(), &[])
            .await
            .unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn kinds(&self, id: Uuid, step: &str) -> Vec<String> {
        timeline(&self.store, id)
            .await
            .into_iter()
            .filter(|h| h.step.as_deref() == Some(step))
            .map(|h| match h.attempt {
                Some(a) => format!("{}#{a}", h.kind),
                None => h.kind,
            })
            .collect()
    }

    async fn stop(self) {
        self.p.stop().await;
        self.svc.stop().await;
    }
}

/// No reply in the saga's timeline was set aside: not as a duplicate, not at all.
async fn nothing_ignored(store: &Store, id: Uuid) {
    let ignored: Vec<_> = timeline(store, id)
        .await
        .into_iter()
        .filter(|h| h.kind == "reply_ignored")
        .map(|h| h.detail)
        .collect();
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dead_end_has_a_way_out() {
    let rig = Rig::start().await;
    let late_pivot = rig.order("late-pivot").await;
    let late_comp = rig.order("late-comp").await;
    let backoff = rig.order("backoff").await;
    let closed = rig.order("closed").await;

    // The pivot timed out (the saga stopped: outcome unknown); its success came later.
    wait_status(&rig.store, late_pivot, SagaStatus::Completed, WAIT).await;
    assert_eq!(
        rig.kinds(late_pivot, "commit").await,
        [
            "command_sent#1",
            "timed_out#1",
            "step_failed",
            "failed",
            "late_reply#1",
            "step_succeeded"
        ]
    );
    nothing_ignored(&rig.store, late_pivot).await;

    // The compensation timed out (rollback incomplete); its success came later.
    wait_status(&rig.store, late_comp, SagaStatus::Compensated, WAIT).await;
    let hold = rig.kinds(late_comp, "hold").await;
    let tail = &hold[hold.len() - 6..];
    assert_eq!(
        tail,
        [
            "compensation_sent#1",
            "timed_out#1",
            "compensation_failed",
            "failed",
            "late_reply#1",
            "step_compensated"
        ]
    );
    nothing_ignored(&rig.store, late_comp).await;

    // A step after the pivot waits an hour between attempts. Abort is refused and
    // says what works; retry sends the next attempt now.
    let inst = eventually("ship to wait for its backoff", WAIT, || async {
        let inst = saga(&rig.store, backoff).await;
        (inst.steps[2].forward.status == StepStatus::WaitingRetry).then_some(inst)
    })
    .await;
    assert_eq!(inst.steps[2].forward.attempt, 1);
    let (status, problem) = rig.post(&format!("/v1/sagas/{backoff}/abort"), None).await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("use retry, or resolve-step (`ship`), or terminate"),
        "{detail}"
    );
    let (status, body) = rig.post(&format!("/v1/sagas/{backoff}/retry"), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    eventually("attempt 2 to fail and wait again", WAIT, || async {
        let t = saga(&rig.store, backoff).await.steps[2].forward.clone();
        (t.attempt == 2 && t.status == StepStatus::WaitingRetry).then_some(())
    })
    .await;
    // The courier was booked by phone: resolve the step with its reply.
    let resolve = json!({"outcome": "succeeded", "payload": {"tracking": "T-1"},
        "reason": "booked by phone", "attempt": 2});
    let path = format!("/v1/sagas/{backoff}/steps/ship/resolve");
    let (status, body) = rig.post(&path, Some(resolve.clone())).await;
    assert_eq!(status, 200, "{body}");
    let inst = wait_status(&rig.store, backoff, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.output, Some(json!({"tracking": "T-1"})));
    // The same request again is refused: a resolution applies once.
    let (status, problem) = rig.post(&path, Some(resolve)).await;
    assert_eq!(status, 409, "{problem}");
    let entry = timeline(&rig.store, backoff)
        .await
        .into_iter()
        .find(|h| h.kind == "operator_resolve")
        .unwrap();
    assert_eq!(entry.detail["actor"], "anonymous");
    assert_eq!(entry.detail["reason"], "booked by phone");

    // A step after the pivot failed for good: the saga can be closed.
    wait_status(&rig.store, closed, SagaStatus::Failed, WAIT).await;
    let (status, problem) = rig.post(&format!("/v1/sagas/{closed}/abort"), None).await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = rig
        .post(
            &format!("/v1/sagas/{closed}/terminate"),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(status, 422, "a reason is required: {problem}");
    let body = json!({"reason": "refunded by hand, ticket OPS-7"});
    let (status, body) = rig
        .post(&format!("/v1/sagas/{closed}/terminate"), Some(body))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("terminated")),
        "{body}"
    );
    let inst = saga(&rig.store, closed).await;
    assert_eq!(inst.status, SagaStatus::Terminated);
    let unfinished = sagaflow::store::count_unfinished(&rig.store.pool)
        .await
        .unwrap();
    assert!(
        !unfinished.iter().any(|(s, _)| s == "failed"),
        "{unfinished:?}"
    );
    rig.stop().await;
}

/// Runs `sagaflow sagas …` against the rig's service: exit code, stdout, stderr.
async fn cli(rig: &Rig, token: &str, args: &[&str]) -> (i32, String, String) {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .arg("sagas")
        .args(args)
        .env("SAGAFLOW_API_URL", rig.svc.url(""))
        .env("SAGAFLOW_API_TOKEN", token)
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_cli_finds_and_closes_a_failed_saga() {
    let rig = Rig::with(|s| {
        s.api.auth.enabled = true;
        s.api.auth.tokens = vec![
            token("starter", "w-secret", &[sagaflow::config::Scope::Write]),
            token("reader", "r-secret", &[sagaflow::config::Scope::Read]),
            token(
                "oncall",
                "a-secret",
                &[
                    sagaflow::config::Scope::Read,
                    sagaflow::config::Scope::Admin,
                ],
            ),
        ];
    })
    .await;
    let closed = rig.order("closed").await;
    wait_status(&rig.store, closed, SagaStatus::Failed, WAIT).await;
    let id = closed.to_string();

    let (code, out, err) = cli(
        &rig,
        "r-secret",
        &["list", "--status", "failed", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], id.as_str(), "{out}");
    let (code, out, _) = cli(&rig, "r-secret", &["show", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("failure     command at ship"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ship") && l.contains("failed")),
        "{out}"
    );

    // A read token may not act (4); abort is refused and says what works (1).
    let (code, _, err) = cli(&rig, "r-secret", &["terminate", &id, "--reason", "x"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = cli(&rig, "a-secret", &["abort", &id]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("terminate"), "{err}");

    let filter = ["--definition", "fast-operator", "--status", "failed"];
    let mut dry = vec!["bulk", "terminate", "--dry-run", "-o", "json"];
    dry.extend(filter);
    let (code, out, err) = cli(&rig, "a-secret", &dry).await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["matched"].as_i64(), r["results"][0]["outcome"].as_str()),
        (Some(1), Some("would_act")),
        "{out}"
    );
    assert_eq!(saga(&rig.store, closed).await.status, SagaStatus::Failed);

    let mut act = vec!["bulk", "terminate", "--reason", "refunded by hand (OPS-9)"];
    act.extend(filter);
    let (code, out, err) = cli(&rig, "a-secret", &act).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("matched 1  acted 1  refused 0"), "{out}");
    let inst = saga(&rig.store, closed).await;
    assert_eq!(inst.status, SagaStatus::Terminated);
    let entry = timeline(&rig.store, closed)
        .await
        .into_iter()
        .find(|h| h.kind == "terminated")
        .unwrap();
    assert_eq!(entry.detail["actor"], "oncall");

    // Once finished, terminating again is refused; unknown sagas and dead URLs have
    // their own codes.
    let (code, _, _) = cli(&rig, "a-secret", &["terminate", &id, "--reason", "again"]).await;
    assert_eq!(code, 1);
    let (code, _, _) = cli(&rig, "a-secret", &["show", &Uuid::new_v4().to_string()]).await;
    assert_eq!(code, 3);
    let dead = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["sagas", "list", "--api-url", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert_eq!(dead.status.code(), Some(5));
    rig.stop().await;
}

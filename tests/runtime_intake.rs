//! Intake that no message can jam. A message PostgreSQL cannot store, or a reply whose
//! saga can no longer be read, used to fail its batch's transaction forever and stall
//! every partition of the replica. Each is now dead-lettered with its reason, and the
//! message right behind it on the same partition is applied.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sagaflow::config::Settings;
use sagaflow::engine::SagaStatus;
use sagaflow::messaging::kafka;
use sagaflow::store::Store;
use serde_json::json;
use support::held::*;
use support::*;
use uuid::Uuid;

struct Rig {
    settings: Settings,
    store: Store,
    producer: FutureProducer,
    svc: Option<InProcess>,
    _db: TestDb,
    _broker: Broker,
}

impl Rig {
    async fn start() -> Rig {
        Rig::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Settings)) -> Rig {
        log_init();
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let mut settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
        configure(&mut settings);
        let store = db.store().await;
        let producer = kafka::producer(&settings.kafka).unwrap();
        let svc = Some(InProcess::start(settings.clone()).await);
        Rig {
            settings,
            store,
            producer,
            svc,
            _db: db,
            _broker: broker,
        }
    }

    async fn stop_service(&mut self) {
        self.svc.take().unwrap().stop().await;
    }

    async fn start_service(&mut self) {
        self.svc = Some(InProcess::start(self.settings.clone()).await);
    }

    fn url(&self, path: &str) -> String {
        self.svc.as_ref().unwrap().url(path)
    }

    /// A `held-order` saga waiting for its reply.
    async fn held(&self, key: &str) -> Uuid {
        send_to(&self.producer, &order_placed(&self.settings, key), 0).await;
        wait_saga(&self.store, key).await
    }

    /// Replies for `bystander` on partition 0, behind whatever was sent there before,
    /// and waits for it to be applied.
    async fn bystander_flows(&self, bystander: Uuid) {
        send_to(
            &self.producer,
            &done(&self.settings, bystander, json!({})),
            0,
        )
        .await;
        wait_status(
            &self.store,
            bystander,
            SagaStatus::Completed,
            Duration::from_secs(30),
        )
        .await;
    }

    /// Waits for a dead letter whose reason contains `needle`; returns the reason.
    async fn dead_letter(&self, needle: &str) -> String {
        eventually(
            &format!("a dead letter about {needle:?}"),
            Duration::from_secs(30),
            || async {
                read_topic(&self.settings, &self.settings.kafka.dead_letter_topic)
                    .await
                    .iter()
                    .filter_map(|m| header(m, "dlq-reason"))
                    .find(|r| r.contains(needle))
            },
        )
        .await
    }

    async fn stop(mut self) {
        self.stop_service().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_with_a_nul_is_dead_lettered_and_the_partition_flows() {
    let rig = Rig::start().await;
    let victim = rig.held("victim").await;
    let bystander = rig.held("bystander").await;
    let poison = done(&rig.settings, victim, json!({"note": "a\u{0}b"}));
    send_to(&rig.producer, &poison, 0).await;
    rig.bystander_flows(bystander).await;
    let reason = rig.dead_letter("U+0000").await;
    assert!(reason.contains("data at `/note`"), "{reason}");
    assert_eq!(saga(&rig.store, victim).await.status, SagaStatus::Running);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_with_an_oversized_key_or_a_nul_is_dead_lettered() {
    let rig = Rig::start().await;
    // Short event ids, so the business key (rendered from the data) is what is refused.
    let event = |key: &str, id: &str| {
        let mut e = order_placed(&rig.settings, key);
        for (k, v) in &mut e.headers {
            if k == "ce_id" {
                *v = id.to_owned();
            }
        }
        e
    };
    send_to(&rig.producer, &event(&"k".repeat(12_000), "long-key"), 0).await;
    send_to(&rig.producer, &event("nul\u{0}key", "nul-key"), 0).await;
    let after = rig.held("after").await;
    assert_eq!(sent(&rig.store, after).await, ["cmd:wait#1"]);
    let reason = rig.dead_letter("12000 bytes").await;
    assert!(reason.contains("trigger key"), "{reason}");
    let reason = rig.dead_letter("U+0000").await;
    assert!(reason.contains("data at `/key`"), "{reason}");
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert_eq!(sagas, 1, "only the valid event started a saga");
    rig.stop().await;
}

/// The victim's reply and the bystander's arrive in one batch (sent while the service
/// is stopped), so the batch fails as a whole and is applied reply by reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_to_a_saga_whose_state_is_corrupt_is_parked() {
    let mut rig = Rig::start_with(|s| s.runtime.park_unreadable_after_s = 0).await;
    let victim = rig.held("victim").await;
    let bystander = rig.held("bystander").await;
    rig.stop_service().await;
    corrupt(&rig.store, victim).await;
    send_to(&rig.producer, &done(&rig.settings, victim, json!({})), 0).await;
    send_to(&rig.producer, &done(&rig.settings, bystander, json!({})), 0).await;
    rig.start_service().await;
    wait_status(
        &rig.store,
        bystander,
        SagaStatus::Completed,
        Duration::from_secs(30),
    )
    .await;
    let reason = rig.dead_letter(&victim.to_string()).await;
    assert!(
        reason.contains("reply could not be applied: stored state of saga"),
        "{reason}"
    );
    rig.stop().await;
}

/// Replaces a saga's stored state with JSON that is not a saga; returns the old state.
async fn corrupt(store: &Store, id: Uuid) -> serde_json::Value {
    let old: serde_json::Value = sqlx::query_scalar("SELECT state FROM sagas WHERE id = $1")
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sagas SET state = '{\"not\": \"a saga\"}' WHERE id = $1")
        .bind(id)
        .execute(&store.pool)
        .await
        .unwrap();
    old
}

/// Within `runtime.park_unreadable_after_s` a reply this replica cannot apply is retried,
/// not parked: once the state reads again (here: restored, as a replica of the version
/// that wrote it would read it), the reply is applied and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_to_an_unreadable_saga_is_retried_within_the_grace_period() {
    let rig = Rig::start_with(|s| s.runtime.park_unreadable_after_s = 3600).await;
    let victim = rig.held("victim").await;
    let state = corrupt(&rig.store, victim).await;
    send_to(&rig.producer, &done(&rig.settings, victim, json!({})), 0).await;
    eventually(
        "the consumer to report the failing batch",
        Duration::from_secs(30),
        || async {
            let (status, _) = http_get(&rig.url("/readyz")).await?;
            (status == 503).then_some(())
        },
    )
    .await;
    sqlx::query("UPDATE sagas SET state = $2 WHERE id = $1")
        .bind(victim)
        .bind(&state)
        .execute(&rig.store.pool)
        .await
        .unwrap();
    wait_status(
        &rig.store,
        victim,
        SagaStatus::Completed,
        Duration::from_secs(30),
    )
    .await;
    let dead = read_topic(&rig.settings, &rig.settings.kafka.dead_letter_topic).await;
    assert!(dead.is_empty(), "nothing is parked within the grace period");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_to_a_saga_whose_definition_cannot_be_loaded_is_parked() {
    let rig = Rig::start_with(|s| s.runtime.park_unreadable_after_s = 0).await;
    let victim = rig.held("victim").await;
    let bystander = rig.held("bystander").await;
    // Pin the victim to a stored version whose source no longer parses.
    sqlx::query(
        "INSERT INTO definition_snapshots (name, version, source, file) \
         VALUES ('held-order', 'broken', 'steps: [', 'held-order.yaml')",
    )
    .execute(&rig.store.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE sagas SET version = 'broken', state = jsonb_set(state, '{version}', '\"broken\"') \
         WHERE id = $1",
    )
    .bind(victim)
    .execute(&rig.store.pool)
    .await
    .unwrap();
    send_to(&rig.producer, &done(&rig.settings, victim, json!({})), 0).await;
    rig.bystander_flows(bystander).await;
    let reason = rig.dead_letter("no longer parses").await;
    assert!(reason.contains("version broken"), "{reason}");
    rig.stop().await;
}

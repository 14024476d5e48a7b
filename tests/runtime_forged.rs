//! Replies bound to the commands they answer. Each forged reply from the security review
//! is sent on the real broker: it is dead-lettered with its reason and changes nothing,
//! and the genuine reply, echoing the token its command carried, still completes the
//! saga.
#![allow(clippy::unwrap_used)]

mod support;

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

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    settings: Settings,
    store: Store,
    producer: FutureProducer,
    svc: InProcess,
    _db: TestDb,
    _broker: Broker,
}

impl Rig {
    async fn start() -> Rig {
        log_init();
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
        let store = db.store().await;
        let producer = kafka::producer(&settings.kafka).unwrap();
        let svc = InProcess::start(settings.clone()).await;
        Rig {
            settings,
            store,
            producer,
            svc,
            _db: db,
            _broker: broker,
        }
    }

    async fn held(&self, key: &str) -> Uuid {
        send_to(&self.producer, &order_placed(&self.settings, key), 0).await;
        wait_saga(&self.store, key).await
    }

    /// Sends `record` and waits for its dead letter (found by its `ce_id`); its reason.
    async fn refused(&self, record: &Record) -> String {
        let id = ce(record, "ce_id");
        send_to(&self.producer, record, 0).await;
        eventually(&format!("a dead letter for {id}"), WAIT, || async {
            read_topic(&self.settings, &self.settings.kafka.dead_letter_topic)
                .await
                .iter()
                .find(|m| header(m, "ce_id").as_deref() == Some(id.as_str()))
                .and_then(|m| header(m, "dlq-reason"))
        })
        .await
    }
}

fn ce(record: &Record, name: &str) -> String {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// `record` with header `name` set to `value` (`None` removes it), and a fresh `ce_id`.
fn with(mut record: Record, name: &str, value: Option<&str>) -> Record {
    record.headers.retain(|(k, _)| k != name);
    if let Some(v) = value {
        record.headers.push((name.to_owned(), v.to_owned()));
    }
    for (k, v) in &mut record.headers {
        if k == "ce_id" {
            *v = Uuid::new_v4().to_string();
        }
    }
    record
}

/// Nothing but the command went into the saga's timeline, and it still waits.
async fn unchanged(store: &Store, id: Uuid) {
    let kinds: Vec<String> = timeline(store, id)
        .await
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, ["started", "command_sent"], "{kinds:?}");
    assert_eq!(saga(store, id).await.status, SagaStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_replies_are_dead_lettered_and_change_nothing() {
    let rig = Rig::start().await;
    let victim = rig.held("victim").await;
    let genuine = done(&rig.settings, victim, json!({"authorization_id": "real"}));

    // The command carries the token the genuine reply echoes.
    let commands = topic(&rig.settings, "held.commands");
    let token = eventually("the command on its topic", WAIT, || async {
        read_topic(&rig.settings, &commands)
            .await
            .iter()
            .find(|m| header(m, "ce_sagaid") == Some(victim.to_string()))
            .and_then(|m| header(m, "ce_sagatoken"))
    })
    .await;
    assert_eq!(token, ce(&genuine, "ce_sagatoken"));

    // On the trigger topic, even with the right token.
    let mut on_trigger = with(genuine.clone(), "ce_source", Some("/forger"));
    on_trigger.topic = topic(&rig.settings, "held.orders");
    let reason = rig.refused(&on_trigger).await;
    assert!(reason.contains("trigger topic"), "{reason}");

    // On another definition's reply topic, even with the right token.
    let mut elsewhere = with(genuine.clone(), "ce_source", Some("/forger"));
    elsewhere.topic = topic(&rig.settings, "held.other-replies");
    let reason = rig.refused(&elsewhere).await;
    assert!(reason.contains("reply topic"), "{reason}");

    // On the right topic without a token, and with a token of another key.
    let bare = with(genuine.clone(), "ce_sagatoken", None);
    let reason = rig.refused(&bare).await;
    assert!(reason.contains("carries no `sagatoken`"), "{reason}");
    let mut other = rig.settings.clone();
    other.security.reply_keys = vec!["a-key-the-forger-made-up-0123456789abcdef".into()];
    let forged_token = reply_token(&other, victim, "wait", sagaflow::engine::Phase::Command, 1);
    let wrong = with(genuine.clone(), "ce_sagatoken", Some(&forged_token));
    let reason = rig.refused(&wrong).await;
    assert!(reason.contains("does not match"), "{reason}");

    unchanged(&rig.store, victim).await;

    // The genuine reply counts, and its source is in the timeline.
    send_to(&rig.producer, &genuine, 0).await;
    wait_status(&rig.store, victim, SagaStatus::Completed, WAIT).await;
    let received = timeline(&rig.store, victim)
        .await
        .into_iter()
        .find(|h| h.kind == "reply_received")
        .unwrap();
    assert_eq!(received.detail["source"], "/sagaflow/demo-participant");
    rig.svc.stop().await;
}

/// Other business events share trigger topics: they are neither applied nor dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_events_on_a_trigger_topic_are_ignored() {
    let rig = Rig::start().await;
    let unrelated = cloud_event(
        topic(&rig.settings, "held.orders"),
        "k",
        ("unrelated-1", "/shop", "shop.order_viewed"),
        &json!({"key": "viewed"}),
    );
    send_to(&rig.producer, &unrelated, 0).await;
    // Behind it on the same partition: a trigger, which starts its saga.
    rig.held("after").await;
    let dead = read_topic(&rig.settings, &rig.settings.kafka.dead_letter_topic).await;
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert_eq!(sagas, 1);
    rig.svc.stop().await;
}

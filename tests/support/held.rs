//! Helpers for `tests/sagas-held`: `held-order` sagas are started by an event and wait for
//! a reply that the test sends by hand, on a partition of its choice.

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::util::Timeout;
use sagaflow::config::Settings;
use sagaflow::engine::Phase;
use sagaflow::messaging::envelope::Record;
use sagaflow::messaging::kafka;
use sagaflow::participant::{self, Command};
use sagaflow::store::Store;
use serde_json::json;
use uuid::Uuid;

use super::{cloud_event, eventually, reply_token, topic};

/// Produces `record` to partition `partition` of its topic.
pub async fn send_to(producer: &FutureProducer, record: &Record, partition: i32) {
    producer
        .send(
            kafka::to_future_record(record).partition(partition),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The trigger event that starts the `held-order` saga with business key `key`.
pub fn order_placed(settings: &Settings, key: &str) -> Record {
    cloud_event(
        topic(settings, "held.orders"),
        key,
        (&format!("placed-{key}"), "/tests/shop", "held.order_placed"),
        &json!({"key": key}),
    )
}

/// The success reply to attempt 1 of step `wait` of saga `saga`, with `data`.
pub fn done(settings: &Settings, saga: Uuid, data: serde_json::Value) -> Record {
    let command = Command {
        saga_id: saga,
        definition: "held-order".into(),
        step: "wait".into(),
        attempt: 1,
        phase: Phase::Command,
        command_type: "held.wait".into(),
        command_id: Uuid::new_v4().to_string(),
        payload: json!({}),
        reply_to: topic(settings, "held.replies"),
        token: Some(reply_token(settings, saga, "wait", Phase::Command, 1)),
        traceparent: None,
        tracestate: None,
    };
    participant::reply_record(&command, "held.done", &data)
}

pub async fn saga_by_key(store: &Store, key: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT id FROM sagas WHERE business_key = $1")
        .bind(key)
        .fetch_optional(&store.pool)
        .await
        .unwrap()
}

/// Waits until the saga with business key `key` exists; its id.
pub async fn wait_saga(store: &Store, key: &str) -> Uuid {
    eventually(
        &format!("a saga for {key}"),
        Duration::from_secs(60),
        || async { saga_by_key(store, key).await },
    )
    .await
}

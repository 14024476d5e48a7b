//! The live streams (Server-Sent Events fed by PostgreSQL NOTIFY) over a real port:
//! a saga is followed from running to completed with no polling, the list stream
//! announces each change, clients that do not ask for events get a snapshot, and open
//! streams do not hold up a shutdown.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::participant::{Decision, Policy};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Reads Server-Sent Events off a streaming response.
struct Events {
    res: reqwest::Response,
    buf: String,
}

/// reqwest is built without a default TLS provider (the service picks one).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl Events {
    async fn open(url: &str) -> Events {
        let res = client()
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Events {
            res,
            buf: String::new(),
        }
    }

    /// The next event as (name, data); `None` when the stream ends. Panics after `WAIT`.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(cut) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..cut + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .expect("no event within the deadline")
                .unwrap()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Skips events until `f` accepts one; returns it.
    async fn until(&mut self, what: &str, f: impl Fn(&str, &Value) -> bool) -> Value {
        loop {
            let (name, data) = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {what}"));
            if f(&name, &data) {
                return data;
            }
        }
    }
}

async fn service_with_slow_participants() -> (InProcess, Participants, TestDb) {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-fast"));
    let svc = InProcess::start(settings.clone()).await;
    // Slow enough that a stream opened just after the start sees the saga running.
    let policy: Policy = Arc::new(|_| (Decision::Success, Duration::from_millis(400)));
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
    (svc, p, db)
}

#[tokio::test]
async fn a_saga_is_followed_live_from_running_to_completed_and_the_list_hears_of_it() {
    let (svc, _p, _db) = service_with_slow_participants().await;
    let mut list = Events::open(&svc.url("/v1/streams/sagas")).await;
    list.until("ready", |name, _| name == "ready").await;

    let id = start_saga(&svc.url(""), "fast-warmup", json!({})).await;
    let mut saga = Events::open(&svc.url(&format!("/v1/streams/sagas/{id}"))).await;
    let (name, first) = saga.next().await.unwrap();
    assert_eq!(name, "saga");
    assert_eq!(first["id"], id.to_string());
    assert_eq!(first["status"], "running", "{first:#}");
    // The same body as GET /v1/sagas/{id}: steps and the latest timeline entries.
    assert!(
        first["steps"].is_array() && first["timeline"].is_array(),
        "{first:#}"
    );

    // Pushed when it commits: nothing here polls.
    let done = saga
        .until("completed", |name, d| {
            name == "saga" && d["status"] == "completed"
        })
        .await;
    assert_eq!(done["steps"][0]["status"], "succeeded", "{done:#}");
    // Nothing should fail here: a retry would hide a lost command or reply.
    assert_eq!(done["steps"][0]["attempt"], 1, "{done:#}");

    let id_text = id.to_string();
    list.until("the saga's change", |name, d| {
        name == "changed"
            && d["sagas"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == id_text.as_str()))
    })
    .await;
    svc.stop().await;
}

#[tokio::test]
async fn clients_that_cannot_follow_a_stream_get_a_snapshot_that_ends() {
    let (svc, _p, _db) = service_with_slow_participants().await;
    let id = start_saga(&svc.url(""), "fast-warmup", json!({})).await;
    // No Accept: text/event-stream (a fuzzer, a plain curl): the opening event, then the
    // end of the body, not a response that never ends (`http` reads to the end).
    let (status, body) = http_get(&svc.url(&format!("/v1/streams/sagas/{id}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: saga"), "{body}");
    assert!(body.contains(&id.to_string()), "{body}");
    assert_eq!(body.matches("event:").count(), 1, "{body}");
    let (status, body) = http_get(&svc.url("/v1/streams/sagas")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: ready"), "{body}");
    assert_eq!(body.matches("event:").count(), 1, "{body}");

    let missing = svc.url(&format!("/v1/streams/sagas/{}", Uuid::now_v7()));
    let res = client()
        .get(&missing)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    svc.stop().await;
}

#[tokio::test]
async fn open_streams_end_when_the_service_stops() {
    let (svc, _p, _db) = service_with_slow_participants().await;
    let mut list = Events::open(&svc.url("/v1/streams/sagas")).await;
    list.until("ready", |name, _| name == "ready").await;
    let asked = tokio::time::Instant::now();
    // InProcess::stop asserts a clean stop within its deadline.
    let stopping = tokio::spawn(svc.stop());
    // Ended by the stop itself, not cut when the server gives up on the connection
    // (`request_timeout_ms` later): a stream must not hold up a shutdown.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = list.res.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream is still open 5 s after the stop began"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    stopping.await.unwrap();
}

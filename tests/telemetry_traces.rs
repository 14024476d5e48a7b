//! One trace per saga: an in-process OTLP/gRPC receiver captures the spans of sagas
//! driven end to end (service, Apache Kafka, PostgreSQL, the test participant) and checks
//! that every hop is a child of the previous one, that each kind of span (HTTP server,
//! create, the relay's send, consumer process, participant process and reply) has the
//! OpenTelemetry conventions' attributes with the right types, that the participants
//! report as a service of their own, and that no span carries the tracing bridge's
//! noise. One test in this binary: the tracing subscriber and tracer provider are
//! process-global.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use sagaflow::engine::{Phase, SagaStatus};
use sagaflow::participant::{Decision, Policy};
use sagaflow::store;
use sagaflow::telemetry::{self, Export, TelemetryConfig};
use serde_json::json;
use support::*;
use uuid::Uuid;

/// What the receiver got: the spans, and the `service.name` of each (by span id).
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<HashMap<Vec<u8>, String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        let mut services = self.services.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in &ss.spans {
                    services.insert(span.span_id.clone(), service.clone());
                }
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn receiver() -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = Receiver::default();
    let service = TraceServiceServer::new(r.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (r, format!("http://{addr}"))
}

/// The service name the test gives sagaflow, and the one its participants get.
const SERVICE: &str = "sagaflow-test";
const PARTICIPANTS: &str = "sagaflow-test-participants";

fn value<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn attr(span: &Span, key: &str) -> Option<String> {
    value(span, key).map(|v| match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// A string attribute the span must have.
fn string(span: &Span, key: &str) -> String {
    match value(span, key) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => panic!("`{}`: {key} must be a string, is {other:?}", span.name),
    }
}

/// An integer attribute the span must have.
fn int(span: &Span, key: &str) -> i64 {
    match value(span, key) {
        Some(AnyValue::IntValue(i)) => *i,
        other => panic!("`{}`: {key} must be an int, is {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The broker's `server.address` and `server.port`, from the test's bootstrap servers.
fn broker_of(bootstrap: &str) -> (String, i64) {
    let first = bootstrap.split(',').next().unwrap().trim();
    let (host, port) = first.rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

/// The attributes every Kafka span has (OpenTelemetry messaging conventions).
fn messaging(span: &Span, operation: &str) {
    assert_eq!(string(span, "messaging.system"), "kafka", "{}", span.name);
    assert_eq!(string(span, "messaging.operation.type"), operation);
    assert_eq!(string(span, "messaging.operation.name"), operation);
}

fn names_broker(span: &Span, broker: &(String, i64)) {
    assert_eq!(string(span, "server.address"), broker.0, "{}", span.name);
    assert_eq!(int(span, "server.port"), broker.1, "{}", span.name);
}

/// A consumer span of a message read by `group` (a prefix of it).
fn consumed(span: &Span, group: &str, broker: &(String, i64)) {
    assert_eq!(span.kind, SpanKind::Consumer as i32, "{}", span.name);
    messaging(span, "process");
    let g = string(span, "messaging.consumer.group.name");
    assert!(g.starts_with(group), "`{}`: group {g}", span.name);
    let partition = string(span, "messaging.destination.partition.id");
    assert!(
        partition.parse::<i32>().is_ok_and(|p| p >= 0),
        "{partition}"
    );
    assert!(int(span, "messaging.kafka.offset") >= 0);
    names_broker(span, broker);
    for key in ["messaging.destination.name", "messaging.message.id"] {
        string(span, key);
    }
}

/// The spans of one saga, by name, with ` #N` appended for attempts after the first
/// (each key must be unique within the saga).
struct SagaTrace {
    by_name: HashMap<String, Span>,
    services: HashMap<Vec<u8>, String>,
    /// sagaflow's consumer group.
    group: String,
    broker: (String, i64),
}

impl SagaTrace {
    fn new(r: &Receiver, saga: Uuid, settings: &sagaflow::config::Settings) -> SagaTrace {
        let all = r.spans.lock().unwrap().clone();
        let spans: Vec<&Span> = all
            .iter()
            .filter(|s| attr(s, "saga.id").as_deref() == Some(&saga.to_string()))
            .collect();
        let traces: std::collections::HashSet<String> =
            spans.iter().map(|s| hex(&s.trace_id)).collect();
        assert_eq!(traces.len(), 1, "one trace id for saga {saga}: {traces:?}");
        let mut by_name = HashMap::new();
        for s in spans {
            let key = match attr(s, "saga.attempt").as_deref() {
                None | Some("1") => s.name.clone(),
                Some(n) => format!("{} #{n}", s.name),
            };
            assert!(
                by_name.insert(key.clone(), s.clone()).is_none(),
                "span `{key}` appears twice in saga {saga}"
            );
        }
        SagaTrace {
            by_name,
            services: r.services.lock().unwrap().clone(),
            group: settings.kafka.group_id.clone(),
            broker: broker_of(&settings.kafka.bootstrap_servers),
        }
    }

    fn get(&self, name: &str) -> &Span {
        self.by_name.get(name).unwrap_or_else(|| {
            panic!(
                "no span `{name}`; have {:?}",
                self.by_name.keys().collect::<Vec<_>>()
            )
        })
    }

    fn service(&self, name: &str) -> &str {
        &self.services[&self.get(name).span_id]
    }

    fn trace_id(&self) -> String {
        hex(&self.by_name.values().next().unwrap().trace_id)
    }

    /// `child`'s parent is `parent`.
    fn linked(&self, parent: &str, child: &str) {
        assert_eq!(
            hex(&self.get(child).parent_span_id),
            hex(&self.get(parent).span_id),
            "`{child}` must be a child of `{parent}`"
        );
    }

    /// create → participant → reply → process reply, for one message.
    fn hop(&self, send_parent: &str, label: &str) {
        self.hop_n(send_parent, label, "");
    }

    /// [`hop`](Self::hop) for a later attempt (`n` is ` #2`, …).
    fn hop_n(&self, send_parent: &str, label: &str, n: &str) {
        let create = format!("create {label}{n}");
        let process = format!("process {label}{n}");
        let reply = format!("send {label} reply{n}");
        let processed = format!("process {label} reply{n}");
        self.linked(send_parent, &create);
        self.linked(&create, &process);
        self.linked(&process, &reply);
        self.linked(&reply, &processed);
        self.created(&create);
        self.participant(&create, &process, &reply);
        let process = self.get(&processed);
        consumed(process, &self.group, &self.broker);
        assert_eq!(self.service(&processed), SERVICE);
        // The test's namespaced copy of the reply topic (see `support::settings`).
        let destination = string(process, "messaging.destination.name");
        assert!(
            destination.ends_with(".orders.saga-replies"),
            "{destination}"
        );
        assert_eq!(
            string(process, "messaging.message.id"),
            string(self.get(&reply), "messaging.message.id"),
            "the reply's id on both sides"
        );
        string(process, "saga.status");
    }

    /// The creation of a command: written to the outbox, in sagaflow's service.
    fn created(&self, name: &str) {
        let create = self.get(name);
        assert_eq!(create.kind, SpanKind::Producer as i32);
        assert_eq!(self.service(name), SERVICE);
        messaging(create, "create");
        for key in [
            "saga.id",
            "saga.name",
            "saga.step",
            "saga.status",
            "messaging.destination.name",
            "messaging.message.id",
            "messaging.kafka.message.key",
        ] {
            string(create, key);
        }
        assert!(int(create, "saga.attempt") >= 1);
    }

    /// The participant's consumer span and its reply's producer span, in a service of
    /// their own; the reply names its own id, not the command's.
    fn participant(&self, create: &str, process: &str, reply: &str) {
        let command_id = string(self.get(create), "messaging.message.id");
        let p = self.get(process);
        consumed(p, "participants-", &self.broker);
        assert_eq!(string(p, "messaging.message.id"), command_id);
        let r = self.get(reply);
        assert_eq!(r.kind, SpanKind::Producer as i32);
        messaging(r, "send");
        names_broker(r, &self.broker);
        assert_ne!(string(r, "messaging.message.id"), command_id);
        string(r, "messaging.kafka.message.key");
        assert!(string(r, "messaging.destination.name").ends_with(".orders.saga-replies"));
        for name in [process, reply] {
            assert_eq!(self.service(name), PARTICIPANTS, "`{name}`");
        }
    }

    /// Every command this saga created went out in a relay `send` span linked to it.
    fn published(&self, all: &[Span]) {
        for (name, create) in self
            .by_name
            .iter()
            .filter(|(n, _)| n.starts_with("create "))
        {
            let send = relay_span_linking(all, create)
                .unwrap_or_else(|| panic!("no relay span links `{name}`"));
            assert_eq!(self.services[&send.span_id], SERVICE);
            names_broker(send, &self.broker);
            let topic = string(create, "messaging.destination.name");
            if let Some(t) = attr(send, "messaging.destination.name") {
                assert_eq!(send.name, format!("send {t}"));
            }
            match attr(send, "messaging.message.id") {
                Some(id) => assert_eq!(id, string(create, "messaging.message.id")),
                None => assert!(int(send, "messaging.batch.message_count") > 1),
            }
            assert!(send.name == "send" || send.name == format!("send {topic}"));
        }
    }

    fn failed(&self, name: &str) -> bool {
        self.get(name)
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
}

/// The relay's producer span (a batch: a trace of its own) that links to `created`.
fn relay_span_linking<'a>(all: &'a [Span], created: &Span) -> Option<&'a Span> {
    let send = all.iter().find(|s| {
        s.links
            .iter()
            .any(|l| l.span_id == created.span_id && l.trace_id == created.trace_id)
    })?;
    assert_eq!(send.kind, SpanKind::Producer as i32);
    assert!(send.parent_span_id.is_empty(), "a batch span is a root");
    assert!(attr(send, "saga.id").is_none());
    messaging(send, "send");
    Some(send)
}

fn order(id: &str, amount: f64) -> serde_json::Value {
    json!({"order_id": id, "customer_id": "c-1", "amount": amount, "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]})
}

async fn start(svc: &InProcess, input: serde_json::Value, headers: &[(&str, &str)]) -> Uuid {
    let (status, body) = http(
        "POST",
        &svc.url("/v1/sagas/order-fulfilment"),
        Some(&json!({"input": input})),
        headers,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// The caller's trace, as the compensated saga's start request and the probe send it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The creation context of a row the broker refuses (a topic it takes no writes for).
const REFUSED_PARENT: &str = "2222222222222222";

/// The policy of the test's participants. Order "o-comp": reserve_stock fails once
/// (retryable, so a retry timer fires), then capture_payment declines, so both earlier
/// steps are compensated.
fn policy() -> Policy {
    Arc::new(|c| {
        // capture_payment's payload has no order id: the amount marks that order.
        let comp = c.payload.to_string().contains("o-comp") || c.payload["amount"] == json!(66.5);
        let command = c.phase == Phase::Command;
        let d = match (comp && command, c.step.as_str(), c.attempt) {
            (true, "reserve_stock", 1) => Decision::Failure { retryable: true },
            (true, "capture_payment", _) => Decision::Failure { retryable: false },
            _ => Decision::Success,
        };
        (d, Duration::ZERO)
    })
}

/// Writes an outbox row for `saga` to a topic the broker refuses and waits until the
/// relay has parked it.
async fn park_refused_row(store: &store::Store, saga: Uuid) {
    let traceparent = format!("00-{CALLER_TRACE}-{REFUSED_PARENT}-01");
    sqlx::query(
        "INSERT INTO outbox (saga_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(saga)
    .bind("__consumer_offsets")
    .bind("refused")
    .bind(json!([
        ["ce_id", "refused-1"],
        ["ce_time", "2026-11-30T00:00:00Z"],
        ["traceparent", traceparent]
    ]))
    .bind(b"{}".to_vec())
    .execute(&store.pool)
    .await
    .unwrap();
    eventually(
        "the refused row to be parked",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_parked")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
}

/// Runs a saga that completes and one that is compensated (started in the caller's
/// trace), and parks a refused row; their ids.
async fn run_sagas(settings: &sagaflow::config::Settings, store: &store::Store) -> (Uuid, Uuid) {
    let svc = InProcess::start(settings.clone()).await;
    let p = participants(settings, load_defs(&settings.runtime.sagas_dir), policy());
    let happy = start(&svc, order("o-happy", 12.5), &[]).await;
    let caller = format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01");
    let comp = start(
        &svc,
        order("o-comp", 66.5),
        &[("traceparent", &caller), ("tracestate", "vendor=x")],
    )
    .await;
    let within = Duration::from_secs(30);
    wait_status(store, happy, SagaStatus::Completed, within).await;
    wait_status(store, comp, SagaStatus::Compensated, within).await;
    // The API gives the saga's trace id: the caller's, read past the stored tracestate.
    let (status, body) = http_get(&svc.url(&format!("/v1/sagas/{comp}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["trace_id"], CALLER_TRACE, "{body}");
    park_refused_row(store, happy).await;
    p.stop().await;
    svc.stop().await;
    (happy, comp)
}

/// The stored context is the saga's root span, in the caller's trace when given.
async fn check_stored_contexts(store: &store::Store, happy: Uuid, comp: Uuid) {
    let stored = |id| async move {
        store::get_saga(&store.pool, id)
            .await
            .unwrap()
            .unwrap()
            .trace_context
    };
    let comp_cx = stored(comp).await.unwrap();
    assert!(comp_cx.contains(CALLER_TRACE), "{comp_cx}");
    let generated = stored(happy)
        .await
        .expect("a saga started without traceparent gets a generated context");
    assert!(generated.starts_with("00-"), "{generated}");
}

/// Serves one request through the HTTP layer (as the API mounts it); the address.
async fn probe_http() -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/probe/{id}", axum::routing::get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(telemetry::http_middleware));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let probe = format!("00-{CALLER_TRACE}-1111111111111111-01");
    let url = format!("http://{addr}/probe/7");
    let (status, _) = http("GET", &url, None, &[("traceparent", &probe)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    addr
}

/// The HTTP server span continues the caller and has the HTTP server conventions'
/// required and recommended attributes, with their types.
fn check_http(all: &[Span], addr: std::net::SocketAddr) {
    let get = all
        .iter()
        .find(|s| s.name == "GET /probe/{id}")
        .expect("an HTTP server span");
    assert_eq!(get.kind, SpanKind::Server as i32);
    assert_eq!(hex(&get.parent_span_id), "1111111111111111");
    assert_eq!(hex(&get.trace_id), CALLER_TRACE);
    for (key, want) in [
        ("http.request.method", "GET"),
        ("http.route", "/probe/{id}"),
        ("url.path", "/probe/7"),
        ("url.scheme", "http"),
        ("server.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(string(get, key), want, "{key}");
    }
    assert_eq!(int(get, "server.port"), i64::from(addr.port()));
    assert_eq!(int(get, "http.response.status_code"), 200);
}

/// The server span of the request that started the saga whose start span is `start`.
fn start_request<'a>(all: &'a [Span], start: &Span) -> &'a Span {
    let http_span = all
        .iter()
        .find(|s| s.span_id == start.parent_span_id)
        .expect("the start span's parent is exported");
    assert_eq!(http_span.name, "POST /v1/sagas/{saga}");
    assert_eq!(http_span.kind, SpanKind::Server as i32);
    assert_eq!(int(http_span, "http.response.status_code"), 201);
    assert_eq!(hex(&http_span.trace_id), hex(&start.trace_id));
    http_span
}

/// Happy path: start → create → participant → reply → process reply → next create …
fn check_happy(recv: &Receiver, all: &[Span], happy: Uuid, settings: &sagaflow::config::Settings) {
    let t = SagaTrace::new(recv, happy, settings);
    let start_span = t.get("start order-fulfilment");
    // The start request's server span opens the trace; the saga's start is its child.
    let http_span = start_request(all, start_span);
    assert!(http_span.parent_span_id.is_empty(), "a new root");
    assert_eq!(hex(&start_span.trace_id), t.trace_id());
    t.hop("start order-fulfilment", "reserve_stock");
    t.hop("process reserve_stock reply", "authorize_payment");
    t.hop("process authorize_payment reply", "capture_payment");
    t.hop("process capture_payment reply", "ship_order");
    assert_eq!(
        attr(t.get("process ship_order reply"), "saga.status").as_deref(),
        Some("completed")
    );
    t.published(all);
}

/// Compensation, in the caller's trace, with a retry timer that joins it too.
fn check_compensated(
    recv: &Receiver,
    all: &[Span],
    comp: Uuid,
    settings: &sagaflow::config::Settings,
) {
    let c = SagaTrace::new(recv, comp, settings);
    assert_eq!(c.trace_id(), CALLER_TRACE);
    // Caller → the API's server span → the saga's start span.
    let c_http = start_request(all, c.get("start order-fulfilment"));
    assert_eq!(hex(&c_http.parent_span_id), "00f067aa0ba902b7");
    c.hop("start order-fulfilment", "reserve_stock");
    assert!(
        c.failed("process reserve_stock reply"),
        "a failed attempt is an error"
    );
    let retry = c.get("retry due reserve_stock");
    c.linked("start order-fulfilment", "retry due reserve_stock");
    assert!(
        retry.parent_span_id.len() == 8,
        "a timer is a child of the saga's stored context"
    );
    c.hop_n("retry due reserve_stock", "reserve_stock", " #2");
    c.hop("process reserve_stock reply #2", "authorize_payment");
    c.hop("process authorize_payment reply", "capture_payment");
    c.hop(
        "process capture_payment reply",
        "authorize_payment compensation",
    );
    c.hop(
        "process authorize_payment compensation reply",
        "reserve_stock compensation",
    );
    assert!(
        c.failed("process capture_payment"),
        "the participant's decline is an error"
    );
    assert!(
        c.failed("process capture_payment reply"),
        "the step failure is an error"
    );
    assert_eq!(
        attr(
            c.get("process reserve_stock compensation reply"),
            "saga.status"
        )
        .as_deref(),
        Some("compensated")
    );
    c.published(all);
}

/// The relay's span of a message the broker refuses is an error, linked to the
/// message's creation context.
fn check_refused(all: &[Span]) {
    let send = all
        .iter()
        .find(|s| {
            s.links
                .iter()
                .any(|l| hex(&l.span_id) == REFUSED_PARENT && hex(&l.trace_id) == CALLER_TRACE)
        })
        .expect("a relay span links the refused row's creation context");
    assert_eq!(send.name, "send __consumer_offsets");
    assert_eq!(send.kind, SpanKind::Producer as i32);
    messaging(send, "send");
    assert_eq!(string(send, "messaging.message.id"), "refused-1");
    assert_eq!(string(send, "messaging.kafka.message.key"), "refused");
    assert!(
        send.status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32),
        "a refused message makes the send span an error"
    );
    assert!(!string(send, "error.type").is_empty());
    assert!(send.events.iter().any(|e| e.name == "message refused"));
}

/// No span carries the tracing bridge's noise, the log-only fields or an attribute
/// twice, and every span is one of ours: the exporter's own stack (tonic, hyper, h2)
/// must not trace itself.
fn check_hygiene(all: &[Span]) {
    const LOG_ONLY: [&str; 7] = [
        "busy_ns",
        "idle_ns",
        "target",
        "saga_id",
        "step",
        "trace_id",
        "sagaflow.participant",
    ];
    for s in all {
        let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
        for k in &keys {
            assert!(
                !LOG_ONLY.contains(k) && !k.starts_with("code.") && !k.starts_with("thread."),
                "`{}` carries {k}",
                s.name
            );
        }
        let unique: std::collections::HashSet<&&str> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "`{}` repeats one of {keys:?}",
            s.name
        );
        let ours = ["saga.id", "messaging.system", "http.request.method"]
            .iter()
            .any(|k| keys.contains(k));
        assert!(ours || s.name == "warm-up", "foreign span `{}`", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_saga_is_one_connected_trace_across_kafka_hops() {
    let (recv, endpoint) = receiver().await;
    let guard = telemetry::init(TelemetryConfig {
        json_logs: false,
        export: Export::Grpc(endpoint),
        default_service_name: SERVICE.into(),
    })
    .unwrap();
    let guard = Arc::new(Mutex::new(Some(guard)));
    // Warm-up export: the first one opens the gRPC connection.
    tracing::info_span!("warm-up").in_scope(|| {});
    let g = guard.clone();
    tokio::task::spawn_blocking(move || g.lock().unwrap().as_ref().unwrap().flush())
        .await
        .unwrap();

    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("sagas"));
    let store = db.store().await;
    let (happy, comp) = run_sagas(&settings, &store).await;
    check_stored_contexts(&store, happy, comp).await;
    let http_addr = probe_http().await;

    let spans = recv.spans.clone();
    eventually("spans to be exported", Duration::from_secs(20), || {
        let spans = spans.clone();
        async move {
            let have = spans.lock().unwrap();
            let done = have.iter().any(|s| s.name == "send ship_order reply")
                && have
                    .iter()
                    .any(|s| s.name == "process reserve_stock compensation reply")
                && have.iter().any(|s| s.name == "GET /probe/{id}");
            done.then_some(())
        }
    })
    .await;
    tokio::task::spawn_blocking(move || guard.lock().unwrap().take().unwrap().shutdown())
        .await
        .unwrap();
    let all = recv.spans.lock().unwrap().clone();
    if std::env::var("TRACE_DUMP").is_ok() {
        for s in &all {
            let attrs: Vec<String> = s
                .attributes
                .iter()
                .map(|a| {
                    format!(
                        "{}={:?}",
                        a.key,
                        a.value.as_ref().and_then(|v| v.value.as_ref())
                    )
                })
                .collect();
            eprintln!(
                "{} {} parent={} links={} {attrs:?}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.links.len()
            );
        }
    }
    check_http(&all, http_addr);
    check_happy(&recv, &all, happy, &settings);
    check_compensated(&recv, &all, comp, &settings);
    check_refused(&all);
    check_hygiene(&all);
}

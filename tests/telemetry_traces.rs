//! One trace per saga: an in-process OTLP/gRPC receiver captures the spans of sagas
//! driven end to end (service, Apache Kafka, PostgreSQL, the test participant) and checks
//! that every hop is a child of the previous one. One test in this binary: the
//! tracing subscriber and tracer provider are process-global.
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

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
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

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one saga, by name, with ` #N` appended for attempts after the first
/// (each key must be unique within the saga).
struct SagaTrace {
    by_name: HashMap<String, Span>,
}

impl SagaTrace {
    fn new(all: &[Span], saga: Uuid) -> SagaTrace {
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
        SagaTrace { by_name }
    }

    fn get(&self, name: &str) -> &Span {
        self.by_name.get(name).unwrap_or_else(|| {
            panic!(
                "no span `{name}`; have {:?}",
                self.by_name.keys().collect::<Vec<_>>()
            )
        })
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

    /// send → participant → reply → process reply, for one message.
    fn hop(&self, send_parent: &str, label: &str) {
        self.hop_n(send_parent, label, "");
    }

    /// [`hop`](Self::hop) for a later attempt (`n` is ` #2`, …).
    fn hop_n(&self, send_parent: &str, label: &str, n: &str) {
        self.linked(send_parent, &format!("send {label}{n}"));
        self.linked(&format!("send {label}{n}"), &format!("process {label}{n}"));
        self.linked(
            &format!("process {label}{n}"),
            &format!("send {label} reply{n}"),
        );
        self.linked(
            &format!("send {label} reply{n}"),
            &format!("process {label} reply{n}"),
        );
        let send = self.get(&format!("send {label}{n}"));
        assert_eq!(send.kind, SpanKind::Producer as i32);
        for key in [
            "saga.id",
            "saga.name",
            "saga.step",
            "saga.attempt",
            "saga.status",
            "messaging.destination.name",
            "messaging.message.id",
        ] {
            assert!(attr(send, key).is_some(), "`send {label}` lacks {key}");
        }
        assert_eq!(attr(send, "messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            attr(send, "messaging.operation.type").as_deref(),
            Some("send")
        );
        let process = self.get(&format!("process {label} reply{n}"));
        assert_eq!(process.kind, SpanKind::Consumer as i32);
        assert_eq!(
            attr(process, "messaging.operation.type").as_deref(),
            Some("process")
        );
        // The test's namespaced copy of the reply topic (see `support::settings`).
        let destination = attr(process, "messaging.destination.name").unwrap_or_default();
        assert!(
            destination.ends_with(".orders.saga-replies"),
            "{destination}"
        );
        assert!(attr(process, "saga.status").is_some());
    }

    fn failed(&self, name: &str) -> bool {
        self.get(name)
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_saga_is_one_connected_trace_across_kafka_hops() {
    let (recv, endpoint) = receiver().await;
    let guard = telemetry::init(TelemetryConfig {
        json_logs: false,
        export: Export::Grpc(endpoint),
        default_service_name: "sagaflow-test".into(),
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
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    // Order "o-comp": reserve_stock fails once (retryable, so a retry timer fires),
    // then capture_payment declines, so both earlier steps are compensated.
    let policy: Policy = Arc::new(|c| {
        // capture_payment's payload has no order id: the amount marks that order.
        let comp = c.payload.to_string().contains("o-comp") || c.payload["amount"] == json!(66.5);
        let command = c.phase == Phase::Command;
        let d = match (comp && command, c.step.as_str(), c.attempt) {
            (true, "reserve_stock", 1) => Decision::Failure { retryable: true },
            (true, "capture_payment", _) => Decision::Failure { retryable: false },
            _ => Decision::Success,
        };
        (d, Duration::ZERO)
    });
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
    let store = db.store().await;

    let happy = start(&svc, order("o-happy", 12.5), &[]).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    let comp = start(
        &svc,
        order("o-comp", 66.5),
        &[("traceparent", &caller), ("tracestate", "vendor=x")],
    )
    .await;
    wait_status(
        &store,
        happy,
        SagaStatus::Completed,
        Duration::from_secs(30),
    )
    .await;
    wait_status(
        &store,
        comp,
        SagaStatus::Compensated,
        Duration::from_secs(30),
    )
    .await;
    p.stop().await;
    svc.stop().await;

    // The stored context is the saga's root span, in the caller's trace when given.
    let stored = store::get_saga(&store.pool, comp)
        .await
        .unwrap()
        .unwrap()
        .trace_context
        .unwrap();
    assert!(stored.contains(caller_trace), "{stored}");
    let generated = store::get_saga(&store.pool, happy)
        .await
        .unwrap()
        .unwrap()
        .trace_context
        .expect("a saga started without traceparent gets a generated context");
    assert!(generated.starts_with("00-"), "{generated}");

    // The HTTP layer (mounted by the API) continues the caller's context.
    let app = axum::Router::new()
        .route("/probe/{id}", axum::routing::get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(telemetry::http_middleware));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let probe = format!("00-{caller_trace}-1111111111111111-01");
    let (status, _) = http(
        "GET",
        &format!("http://{http_addr}/probe/7"),
        None,
        &[("traceparent", &probe)],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let spans = recv.spans.clone();
    let last_send = "send ship_order reply";
    eventually("spans to be exported", Duration::from_secs(20), || {
        let spans = spans.clone();
        async move {
            let have = spans.lock().unwrap();
            let done = have.iter().filter(|s| s.name == last_send).count() == 1
                && have
                    .iter()
                    .any(|s| s.name == "process reserve_stock compensation reply");
            done.then_some(())
        }
    })
    .await;
    tokio::task::spawn_blocking(move || guard.lock().unwrap().take().unwrap().shutdown())
        .await
        .unwrap();
    let all = recv.spans.lock().unwrap().clone();
    let get = all
        .iter()
        .find(|s| s.name == "GET /probe/{id}")
        .expect("an HTTP server span");
    assert_eq!(get.kind, SpanKind::Server as i32);
    assert_eq!(hex(&get.parent_span_id), "1111111111111111");
    assert_eq!(hex(&get.trace_id), caller_trace);
    assert_eq!(
        attr(get, "http.response.status_code").as_deref(),
        Some("200")
    );
    if std::env::var("TRACE_DUMP").is_ok() {
        for s in &all {
            eprintln!(
                "{} {} parent={} attrs={:?}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.attributes
                    .iter()
                    .map(|a| a.key.clone())
                    .collect::<Vec<_>>()
            );
        }
    }

    // Happy path: start → send → participant → reply → process reply → next send …
    let t = SagaTrace::new(&all, happy);
    let start_span = t.get("start order-fulfilment");
    // The start request's server span opens the trace; the saga's start is its child.
    let http_span = all
        .iter()
        .find(|s| s.span_id == start_span.parent_span_id)
        .expect("the start span's parent is exported");
    assert_eq!(http_span.name, "POST /v1/sagas/{saga}");
    assert_eq!(http_span.kind, SpanKind::Server as i32);
    assert!(http_span.parent_span_id.is_empty(), "a new root");
    assert_eq!(hex(&start_span.trace_id), t.trace_id());
    assert_eq!(hex(&http_span.trace_id), t.trace_id());
    t.hop("start order-fulfilment", "reserve_stock");
    t.hop("process reserve_stock reply", "authorize_payment");
    t.hop("process authorize_payment reply", "capture_payment");
    t.hop("process capture_payment reply", "ship_order");
    assert_eq!(
        attr(t.get("process ship_order reply"), "saga.status").as_deref(),
        Some("completed")
    );

    // Compensation, in the caller's trace, with a retry timer that joins it too.
    let c = SagaTrace::new(&all, comp);
    assert_eq!(c.trace_id(), caller_trace);
    // Caller → the API's server span → the saga's start span.
    let c_start = c.get("start order-fulfilment");
    let c_http = all
        .iter()
        .find(|s| s.span_id == c_start.parent_span_id)
        .expect("the start span's parent is exported");
    assert_eq!(c_http.name, "POST /v1/sagas/{saga}");
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
    // The exporter's own stack (tonic, hyper, h2) must not trace itself.
    let foreign: Vec<String> = all
        .iter()
        .filter_map(|s| attr(s, "target"))
        .filter(|t| !t.starts_with("sagaflow") && t != "telemetry_traces")
        .collect();
    assert!(foreign.is_empty(), "{foreign:?}");
}

//! Logs, traces and metrics.
//!
//! - Logs: human-readable by default, JSON with `SAGAFLOW_LOG_FORMAT=json`; `RUST_LOG`
//!   filters them. Payloads are never logged unless `SAGAFLOW_LOG_PAYLOADS=true`.
//! - Traces: an OpenTelemetry tracer provider is always installed, so every saga gets
//!   real trace and span ids (in headers and logs); spans are exported over OTLP only
//!   when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. Protocol,
//!   headers, service name and sampler come from the standard `OTEL_*` variables. The
//!   demo participants' spans are exported as `<service.name>-participants` (see
//!   `export.rs`).
//! - Metrics: see [`metrics`].

mod export;
mod filter;
mod http;
pub mod metrics;
pub mod propagation;
pub mod saga;
pub mod spans;

pub use http::http_middleware;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,rdkafka=warn,librdkafka=warn";
/// The exporter's own HTTP/gRPC stack must not produce spans, or every export would
/// produce more spans to export.
const OTEL_FILTER: &str = "info,hyper=off,h2=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,sqlx=off,rdkafka=off,librdkafka=off";

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    None,
    /// Whatever the `OTEL_EXPORTER_OTLP_*` variables say.
    FromEnv,
    /// OTLP/gRPC to this endpoint (tests).
    Grpc(String),
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub json_logs: bool,
    pub export: Export,
    /// Used when `OTEL_SERVICE_NAME` is not set.
    pub default_service_name: String,
}

impl TelemetryConfig {
    pub fn from_env() -> TelemetryConfig {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
        let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v == "none")
            || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v == "true");
        let endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        TelemetryConfig {
            json_logs: std::env::var("SAGAFLOW_LOG_FORMAT").is_ok_and(|f| f == "json"),
            export: if endpoint && !disabled {
                Export::FromEnv
            } else {
                Export::None
            },
            default_service_name: "sagaflow".into(),
        }
    }
}

/// Whether log lines may include message payloads (`SAGAFLOW_LOG_PAYLOADS=true`).
pub fn log_payloads() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SAGAFLOW_LOG_PAYLOADS").is_ok_and(|v| v == "true"))
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP span exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and shuts the tracer provider down when dropped (or on [`shutdown`]).
///
/// [`shutdown`]: TelemetryGuard::shutdown
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is buffered. Blocks: call it outside async code, or from
    /// `spawn_blocking`, while the Tokio runtime that built the exporter still runs.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: trace export did not finish: {e}");
        }
    }

    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn exporter(export: &Export) -> Result<Option<SpanExporter>, TelemetryError> {
    Ok(match export {
        Export::None => None,
        Export::FromEnv => Some(SpanExporter::builder().build()?),
        Export::Grpc(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            Some(exporter)
        }
    })
}

fn provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(config.default_service_name.clone());
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let builder = match (exporter(&config.export)?, exporter(&config.export)?) {
        (Some(service), Some(participants)) => builder.with_span_processor(export::Pipelines::new(
            BatchSpanProcessor::builder(service).build(),
            BatchSpanProcessor::builder(participants).build(),
        )),
        _ => builder,
    };
    Ok(builder.build())
}

/// Installs the global subscriber (logs + OTel layer) and the metrics recorder. Must run
/// inside a Tokio runtime: the gRPC exporter's channel lives on it.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    metrics::install();
    let provider = provider(&config)?;
    let tracer = provider.tracer("sagaflow");
    let log_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = config.json_logs.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let text = (!config.json_logs).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    // Timings, source locations, threads and targets describe our code, not the
    // saga: they would be on every span and help no one reading a trace.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(filter::Fresh(EnvFilter::new(OTEL_FILTER)));
    tracing_subscriber::registry()
        .with(json)
        .with(text)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

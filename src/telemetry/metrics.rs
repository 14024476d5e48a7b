//! Prometheus metrics: one global recorder (the `metrics` facade), rendered by our own
//! `/metrics` route through [`render`]. Every metric is described here and listed in
//! docs/observability.md; call sites use the small functions below so names and labels
//! cannot drift between code and docs.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const SAGAS_STARTED: &str = "sagaflow_sagas_started_total";
pub const SAGAS_COMPLETED: &str = "sagaflow_sagas_completed_total";
pub const SAGAS_COMPENSATED: &str = "sagaflow_sagas_compensated_total";
pub const SAGAS_FAILED: &str = "sagaflow_sagas_failed_total";
pub const SAGAS_TERMINATED: &str = "sagaflow_sagas_terminated_total";
pub const SAGA_DURATION: &str = "sagaflow_saga_duration_seconds";
pub const STEP_DURATION: &str = "sagaflow_step_duration_seconds";
pub const SAGAS_IN_FLIGHT: &str = "sagaflow_sagas_in_flight";
pub const OUTBOX_BACKLOG: &str = "sagaflow_outbox_backlog";
pub const OUTBOX_PUBLISHED: &str = "sagaflow_outbox_published_total";
pub const PUBLISH_LATENCY: &str = "sagaflow_outbox_publish_latency_seconds";
pub const CONSUMER_LAG: &str = "sagaflow_consumer_lag";
pub const DEAD_LETTERED: &str = "sagaflow_dead_lettered_total";
pub const DEAD_LETTERS_OPEN: &str = "sagaflow_dead_letters_open";
pub const RETENTION_DELETED: &str = "sagaflow_retention_deleted_total";
pub const OUTBOX_PARKED: &str = "sagaflow_outbox_parked_total";
pub const MESSAGES_IGNORED: &str = "sagaflow_messages_ignored_total";
pub const TIMER_LAG: &str = "sagaflow_timer_lag_seconds";
pub const TIMERS_PARKED: &str = "sagaflow_timers_parked_total";
pub const DB_POOL_CONNECTIONS: &str = "sagaflow_db_pool_connections";
pub const DB_POOL_MAX: &str = "sagaflow_db_pool_max_connections";

/// Step and saga durations span milliseconds (in-process tests) to days (human steps).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
];
/// Publish latency and timer lag should stay well under a second.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process (later calls return the same handle).
/// Metrics recorded before this are lost, so `serve` calls it first thing.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Explicit buckets: without them histograms render as summaries, which cannot
        // be aggregated across replicas.
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(SAGA_DURATION.into()), DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STEP_DURATION.into()), DURATION_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), LAG_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TIMER_LAG.into()), LAG_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// The Prometheus text exposition of every metric (content type
/// `text/plain; version=0.0.4`).
pub fn render() -> String {
    install().render()
}

/// Drains histogram buffers; called by the periodic refresh so memory stays bounded
/// when nobody scrapes.
pub fn upkeep() {
    install().run_upkeep();
}

fn describe() {
    describe_counter!(SAGAS_STARTED, "Sagas started, by definition.");
    describe_counter!(SAGAS_COMPLETED, "Sagas that completed, by definition.");
    describe_counter!(
        SAGAS_COMPENSATED,
        "Sagas that rolled back completely, by definition."
    );
    describe_counter!(
        SAGAS_FAILED,
        "Sagas that stopped and wait for an operator, by definition and phase."
    );
    describe_counter!(
        SAGAS_TERMINATED,
        "Sagas an operator terminated, by definition."
    );
    describe_histogram!(
        SAGA_DURATION,
        Unit::Seconds,
        "Start to end state, by definition and status."
    );
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "First command sent to the step settling, by definition, step and outcome."
    );
    describe_gauge!(SAGAS_IN_FLIGHT, "Sagas not in a terminal state, by status.");
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows waiting to be published.");
    describe_counter!(
        OUTBOX_PUBLISHED,
        "Messages the outbox relay published, by topic."
    );
    describe_histogram!(
        PUBLISH_LATENCY,
        Unit::Seconds,
        "Transition commit to broker acknowledgement of its message."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages behind the high watermark, by topic and partition."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages sent to the dead-letter topic, by reason kind."
    );
    describe_gauge!(
        DEAD_LETTERS_OPEN,
        "Dead letters neither redriven nor discarded (GET /v1/dead-letters?status=open)."
    );
    describe_histogram!(
        TIMER_LAG,
        Unit::Seconds,
        "How late timers fired (now - due_at), by timer kind."
    );
    describe_counter!(
        TIMERS_PARKED,
        "Timer rows parked because they cannot be read (they stay in the timers table with their reason)."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use)."
    );
    describe_gauge!(DB_POOL_MAX, "Configured maximum database pool size.");
}

pub fn saga_started(definition: &str) {
    counter!(SAGAS_STARTED, "definition" => definition.to_owned()).increment(1);
}

/// A saga reached `status` (completed, compensated, failed or terminated) after `age`.
pub fn saga_ended(definition: &str, status: &str, age: Duration) {
    let name = match status {
        "completed" => SAGAS_COMPLETED,
        "compensated" => SAGAS_COMPENSATED,
        "failed" => SAGAS_FAILED,
        "terminated" => SAGAS_TERMINATED,
        _ => return,
    };
    counter!(name, "definition" => definition.to_owned()).increment(1);
    histogram!(SAGA_DURATION, "definition" => definition.to_owned(), "status" => status.to_owned())
        .record(age.as_secs_f64());
}

pub fn step_settled(definition: &str, step: &str, outcome: &str, took: Duration) {
    histogram!(
        STEP_DURATION,
        "definition" => definition.to_owned(),
        "step" => step.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .record(took.as_secs_f64());
}

pub fn sagas_in_flight(status: &str, count: i64) {
    gauge!(SAGAS_IN_FLIGHT, "status" => status.to_owned()).set(count as f64);
}

pub fn dead_letters_open(count: i64) {
    gauge!(DEAD_LETTERS_OPEN).set(count as f64);
}

pub fn outbox_backlog(rows: i64) {
    gauge!(OUTBOX_BACKLOG).set(rows as f64);
}

pub fn published(topic: &str, latency: Option<Duration>) {
    counter!(OUTBOX_PUBLISHED, "topic" => topic.to_owned()).increment(1);
    if let Some(l) = latency {
        histogram!(PUBLISH_LATENCY).record(l.as_secs_f64());
    }
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(lag.max(0) as f64);
}

/// `kind` is a short fixed word (undecodable, unroutable, unknown_saga, unknown_step,
/// trigger_rejected): the full reason is in the message's `dlq-reason` header.
pub fn dead_lettered(kind: &'static str) {
    counter!(DEAD_LETTERED, "reason" => kind).increment(1);
}

/// A message that is neither a trigger nor a reply on a trigger topic (other business
/// events share those topics).
pub fn ignored(kind: &'static str) {
    counter!(MESSAGES_IGNORED, "reason" => kind).increment(1);
}

/// Rows retention removed from `table` (`sagas`, with their timelines; `inbox`).
pub fn retention_deleted(table: &'static str, rows: u64) {
    counter!(RETENTION_DELETED, "table" => table).increment(rows);
}

/// An outbox row the broker refuses for good, moved to `outbox_parked`.
pub fn outbox_parked(topic: &str) {
    counter!(OUTBOX_PARKED, "topic" => topic.to_owned()).increment(1);
}

pub fn timer_parked() {
    counter!(TIMERS_PARKED).increment(1);
}

pub fn timer_fired(kind: &'static str, lag: Duration) {
    histogram!(TIMER_LAG, "timer" => kind).record(lag.as_secs_f64());
}

pub fn db_pool(size: u32, idle: usize, max: u32) {
    let idle = idle as f64;
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set((f64::from(size) - idle).max(0.0));
    gauge!(DB_POOL_MAX).set(f64::from(max));
}

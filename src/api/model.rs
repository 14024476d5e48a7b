//! Request and response bodies. They mirror the engine's types rather than exposing
//! them, so the engine stays free of HTTP concerns and the API can stay stable while
//! the engine's internals change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::definition::Diagnostic;
use crate::engine::{FailurePhase, Instance, SagaStatus, StepStatus};
use crate::store::HistoryRow;

/// Status of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Compensating,
    Completed,
    Compensated,
    /// Waiting for an operator: `retry`, `resolve-step` or `terminate`.
    Failed,
    /// Ended by an operator; nothing more is sent.
    Terminated,
}

impl From<SagaStatus> for Status {
    fn from(s: SagaStatus) -> Status {
        match s {
            SagaStatus::Running => Status::Running,
            SagaStatus::Compensating => Status::Compensating,
            SagaStatus::Completed => Status::Completed,
            SagaStatus::Compensated => Status::Compensated,
            SagaStatus::Failed => Status::Failed,
            SagaStatus::Terminated => Status::Terminated,
        }
    }
}

impl From<Status> for SagaStatus {
    fn from(s: Status) -> SagaStatus {
        match s {
            Status::Running => SagaStatus::Running,
            Status::Compensating => SagaStatus::Compensating,
            Status::Completed => SagaStatus::Completed,
            Status::Compensated => SagaStatus::Compensated,
            Status::Failed => SagaStatus::Failed,
            Status::Terminated => SagaStatus::Terminated,
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::Failed => "failed",
            Status::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"input": {"order_id": "o-1", "amount": 42}, "key": "order-o-1"}))]
pub struct StartBody {
    /// The saga input, checked against the definition's input schema.
    #[serde(default)]
    pub input: Json,
    /// Idempotency / business key; the `Idempotency-Key` header wins over it. 1 to 256
    /// visible ASCII characters (`!` to `~`).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = r"^[\x21-\x7E]+$")]
    pub key: Option<String>,
}

/// The saga a start request created or found.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "0190f3c2-7d2e-7c1a-9b9e-3f6f1d2a8b10", "status": "running", "created": true}))]
pub struct Started {
    pub id: Uuid,
    pub status: Status,
    /// False when an earlier start with the same key and input is returned.
    pub created: bool,
}

/// One row of a saga list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaSummary {
    pub id: Uuid,
    pub definition: String,
    /// Content hash of the definition version the saga runs on.
    pub version: String,
    pub status: Status,
    pub key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [], "next_cursor": null}))]
pub struct SagaPage {
    /// Newest first (by creation time, then id).
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// With `with_counts=true`: every saga the filters match (not only this page), by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<StatusCounts>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only sagas of this definition.
    #[param(max_length = 256)]
    pub definition: Option<String>,
    pub status: Option<Status>,
    /// Only the saga with this business (idempotency) key.
    #[param(max_length = 256)]
    pub key: Option<String>,
    /// Created strictly after this instant (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Only sagas at this step: where a `failed` saga stopped, else the first step in flight.
    #[param(max_length = 256)]
    pub step: Option<String>,
    /// Only sagas whose failure reason contains this text (case-insensitive).
    #[param(min_length = 3, max_length = 256)]
    pub failure: Option<String>,
    /// Only sagas whose business key starts with this.
    #[param(max_length = 256)]
    pub key_prefix: Option<String>,
    /// Only sagas whose input has a value at a JSON pointer: `<pointer>=<value>`, the
    /// value read as JSON (`42`, `true`, `"x"`) or else as a string; the first `=` ends
    /// the pointer.
    #[param(
        example = "/customer_id=c-42",
        pattern = r"^(/[^/=]+)+=",
        max_length = 512
    )]
    pub input: Option<String>,
    /// Also count every matching saga by status (`counts` in the answer).
    pub with_counts: Option<bool>,
    /// Opaque cursor from `next_cursor` of the previous page (empty: first page).
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
}

/// The state of one step.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub name: String,
    /// pending, skipped, running, waiting_retry, succeeded, failed or timed_out.
    pub status: String,
    /// Latest forward attempt whose command went out (0: none).
    pub attempt: u32,
    /// Payload of the success reply (`null` until then). Plain JSON rather than an
    /// Option: `oneOf: [null, any]` would make a `null` match twice and be invalid.
    pub reply: Json,
    pub error: Option<String>,
    /// not_started, running, waiting_retry, compensated, failed or timed_out.
    pub compensation: String,
    pub compensation_attempt: u32,
    pub compensation_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    /// `command` (a step's command failed) or `compensation` (rollback incomplete):
    /// the phase names of the timeline and of the `ce_sagaphase` header.
    pub phase: String,
    pub step: Option<String>,
    pub reason: String,
}

/// One thing that happened to a saga: an attempt, reply, timeout, compensation or
/// operator action (whose `detail.actor` says who).
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// Position in the timeline: pass the last one seen as `after` for the next page.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step: Option<String>,
    /// `command` or `compensation`.
    pub phase: Option<String>,
    pub attempt: Option<i32>,
    pub command_id: Option<Uuid>,
    /// Reply payload, error, or the actor and reason of an operator action.
    pub detail: Json,
}

impl From<HistoryRow> for TimelineEntry {
    fn from(h: HistoryRow) -> TimelineEntry {
        TimelineEntry {
            seq: h.seq,
            at: h.at,
            kind: h.kind,
            step: h.step,
            phase: h.phase,
            attempt: h.attempt,
            command_id: h.command_id,
            detail: h.detail,
        }
    }
}

/// Timeline entries a saga's detail carries (the latest ones).
pub const TIMELINE_IN_DETAIL: usize = 100;

/// One page of a saga's timeline, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelinePage {
    pub items: Vec<TimelineEntry>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimelineParams {
    /// Entries after this `seq` (0 or absent: from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 200)]
    pub limit: Option<u32>,
}

/// Everything about one saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaDetail {
    pub id: Uuid,
    pub definition: String,
    /// Content hash of the definition version the saga is pinned to.
    pub version: String,
    pub status: Status,
    pub key: Option<String>,
    pub input: Json,
    /// The rendered output once completed; `null` before.
    pub output: Json,
    pub failure: Option<FailureView>,
    /// Steps in flight now (forward or compensating).
    pub current_steps: Vec<String>,
    pub steps: Vec<StepView>,
    /// Bumped by every transition.
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
    /// The W3C trace id of the saga's trace (32 hex digits): every span of the saga, its
    /// participants' included, is in this trace. Search for it in Jaeger or Tempo.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
    /// The latest entries (at most 100), oldest first; the whole timeline is paged by
    /// `GET /v1/sagas/{saga}/timeline`.
    pub timeline: Vec<TimelineEntry>,
    /// False when earlier entries exist than those in `timeline`.
    pub timeline_complete: bool,
}

/// A compensation's state in the words the API has always used for it.
fn compensation_text(status: StepStatus) -> String {
    match status {
        StepStatus::Pending => "not_started".into(),
        StepStatus::Succeeded => "compensated".into(),
        other => text(&other),
    }
}

fn text<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Json::String(s)) => s,
        _ => String::new(),
    }
}

impl SagaDetail {
    /// `step_names` and `current` come from the definition version the saga runs on.
    pub fn new(
        inst: Instance,
        revision: i64,
        step_names: Vec<String>,
        current: Vec<String>,
        timeline: Vec<HistoryRow>,
        trace_context: Option<&str>,
    ) -> SagaDetail {
        let steps = inst
            .steps
            .iter()
            .zip(step_names)
            .map(|(s, name)| StepView {
                name,
                status: text(&s.forward.status),
                attempt: s.forward.attempt,
                reply: s.reply.clone().unwrap_or(Json::Null),
                error: s.forward.error.clone(),
                compensation: compensation_text(s.compensation.status),
                compensation_attempt: s.compensation.attempt,
                compensation_error: s.compensation.error.clone(),
            })
            .collect();
        SagaDetail {
            id: inst.id,
            definition: inst.definition,
            version: inst.version,
            status: inst.status.into(),
            key: inst.key,
            input: inst.input,
            output: inst.output.unwrap_or(Json::Null),
            failure: inst.failure.map(|f| FailureView {
                phase: match f.phase {
                    FailurePhase::Forward => "command",
                    FailurePhase::Compensation => "compensation",
                }
                .into(),
                step: f.step,
                reason: f.reason,
            }),
            current_steps: current,
            steps,
            revision,
            created_at: inst.created_at,
            updated_at: inst.updated_at,
            deadline_at: inst.deadline_at,
            trace_id: crate::telemetry::propagation::from_stored(trace_context)
                .map(|sc| sc.trace_id().to_string()),
            timeline_complete: timeline.len() < TIMELINE_IN_DETAIL,
            timeline: timeline.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "customer cancelled by phone"}))]
pub struct AbortBody {
    /// Why; kept in the timeline with the actor.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "refund and courier booked by hand, ticket OPS-123"}))]
pub struct TerminateBody {
    /// Why; kept in the timeline with the actor. Not blank.
    #[schema(min_length = 1, max_length = 1024, pattern = r"\S")]
    pub reason: String,
}

/// What the operator says the attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolveOutcome {
    /// As a success reply carrying `payload`.
    Succeeded,
    /// As a failure reply that is not retried.
    Failed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"outcome": "succeeded", "payload": {"tracking": "1Z999"},
    "reason": "courier confirmed by phone", "attempt": 9}))]
pub struct ResolveBody {
    pub outcome: ResolveOutcome,
    /// Resolve the step's compensation rather than its command.
    #[serde(default)]
    pub compensation: bool,
    /// The reply payload: for `succeeded`, what later steps' templates see as
    /// `steps.<name>.reply` (`{}` when absent); for `failed`, kept in the timeline.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Option<Json>,
    /// Why; kept in the timeline with the actor. Not blank.
    #[schema(min_length = 1, max_length = 1024, pattern = r"\S")]
    pub reason: String,
    /// The attempt meant (see the saga's `steps[].attempt`); refused once another is
    /// current, so sending the same request twice resolves it once.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1)]
    pub attempt: Option<u32>,
}

/// Which sagas a bulk action applies to: the list endpoint's filters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[schema(max_length = 256)]
    pub definition: Option<String>,
    pub status: Option<Status>,
    #[schema(max_length = 256)]
    pub key: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    #[schema(max_length = 256)]
    pub step: Option<String>,
    #[schema(min_length = 3, max_length = 256)]
    pub failure: Option<String>,
    #[schema(max_length = 256)]
    pub key_prefix: Option<String>,
    /// `<JSON pointer>=<value>`, as the list's `input`.
    #[schema(pattern = r"^(/[^/=]+)+=", max_length = 512)]
    pub input: Option<String>,
}

/// How many sagas match a filter, by status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"counts": {"failed": 12, "running": 340}, "capped": false}))]
pub struct StatusCounts {
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Counting stopped at 100,000 sagas: the counts are a lower bound.
    pub capped: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filter": {"definition": "order-fulfilment", "status": "failed"},
    "reason": "courier outage, handled by hand (OPS-42)", "dry_run": true, "limit": 100}))]
pub struct BulkBody {
    /// Empty: every saga.
    #[serde(default)]
    pub filter: BulkFilter,
    /// Kept in each saga's timeline.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub reason: String,
    /// Count and sample the matching sagas; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Act on at most this many sagas in this call.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
}

/// What a bulk action did to one saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkItem {
    pub id: Uuid,
    /// applied, unchanged (nothing to do), refused, failed, or would_act (dry run).
    pub outcome: String,
    /// The saga's status afterwards.
    pub status: Option<Status>,
    /// Why it was refused (the same text a single action's 409 gives).
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefusalCount {
    pub reason: String,
    pub count: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub action: String,
    pub dry_run: bool,
    /// Sagas matching the filter in all (counted up to 100,000).
    pub matched: i64,
    /// `matched` stopped at its cap.
    pub matched_capped: bool,
    pub applied: u32,
    pub unchanged: u32,
    pub refused: u32,
    /// Each distinct refusal reason, with how many sagas got it.
    pub refusals: Vec<RefusalCount>,
    /// One entry per saga acted on, newest first (a dry run: a sample).
    pub results: Vec<BulkItem>,
    /// More sagas matched than this call acted on: call again.
    pub more: bool,
}

/// The saga's status after an operator action.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "0190f3c2-7d2e-7c1a-9b9e-3f6f1d2a8b10", "status": "compensating"}))]
pub struct ActionResult {
    pub id: Uuid,
    pub status: Status,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionSummary {
    pub name: String,
    pub description: String,
    /// Content hash of the current YAML.
    pub version: String,
    pub file: String,
    pub steps: Vec<String>,
    pub pivot: Option<String>,
}

/// A version that sagas which have not finished still run on.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInUse {
    pub version: String,
    /// Sagas on this version that are not completed or compensated.
    pub unfinished_sagas: i64,
    pub first_seen: DateTime<Utc>,
    pub current: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionDetail {
    pub name: String,
    /// The version new sagas start on; `null` once the YAML has been removed.
    pub current: Option<DefinitionSummary>,
    /// JSON Schema of the input; `null` when the definition has none.
    pub input_schema: Json,
    pub versions_in_use: Vec<VersionInUse>,
}

/// One stored version of a definition, as it was loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionVersion {
    pub name: String,
    /// Content hash of `source`.
    pub version: String,
    /// The file it was loaded from.
    pub file: String,
    /// Whether new sagas start on this version.
    pub current: bool,
    /// The YAML source.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"mermaid": "flowchart TD\n  start --> reserve"}))]
pub struct Graph {
    pub mermaid: String,
}

/// Same report as `sagaflow validate --format json`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"valid": false, "errors": [{"file": "definition.yaml", "line": 3, "column": 5,
    "message": "unknown field `stepz`", "help": "did you mean `steps`?", "severity": "error"}],
    "warnings": []}))]
pub struct ValidationReport {
    pub valid: bool,
    #[schema(value_type = Vec<DiagnosticView>)]
    pub errors: Vec<Diagnostic>,
    /// Problems that leave the definition valid (plain values YAML 1.1 tools read
    /// otherwise): fix them, but nothing refuses the definition for them.
    #[schema(value_type = Vec<DiagnosticView>)]
    pub warnings: Vec<Diagnostic>,
}

/// A problem in a definition, pointing at the line and column to fix.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticView {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub help: Option<String>,
    /// `error` or `warning`.
    pub severity: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Alive {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: String,
    pub database: bool,
    pub kafka_consumer: bool,
    pub outbox_relay: bool,
    pub timers: bool,
    /// Number of definitions loaded.
    pub definitions: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterParams {
    /// open, redriven or discarded.
    #[param(max_length = 256)]
    pub status: Option<String>,
    /// Why, in one word: undecodable, invalid, unroutable, unauthenticated, unknown_saga,
    /// unknown_step, wrong_topic, trigger_rejected, apply_failed.
    #[param(max_length = 256)]
    pub kind: Option<String>,
    #[param(max_length = 256)]
    pub source_topic: Option<String>,
    pub saga_id: Option<Uuid>,
    /// Only dead letters older than this id (pass `next_before` for the next page).
    pub before: Option<i64>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
}

/// A message that could not be applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterSummary {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// The full reason (also the `dlq-reason` header on the dead-letter topic).
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub saga_id: Option<Uuid>,
    /// open, redriven or discarded.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterSummary>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    pub key: String,
    /// `[[name, value], …]` as consumed.
    pub headers: Json,
    /// The payload as text when it is UTF-8.
    pub payload: Option<String>,
    /// The payload in base64 when it is not UTF-8.
    pub payload_base64: Option<String>,
    /// False when the message held bytes that could not be kept exactly: it can only
    /// be discarded.
    pub redrivable: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The token name that redrove or discarded it.
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// Why a message is dropped for good.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "duplicate of dead letter 42"}))]
pub struct DiscardBody {
    /// Kept with the message (or in its saga's timeline). Not blank.
    #[schema(min_length = 1, max_length = 1024, pattern = r"\S")]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "definition order-fulfilment v3 loaded, OPS-51"}))]
pub struct DeadLetterAction {
    /// Kept with the dead letter.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub reason: String,
}

/// A command or lifecycle event the broker refused for good, set aside.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedMessage {
    pub id: i64,
    pub saga_id: Uuid,
    pub topic: String,
    pub key: String,
    /// `[[name, value], …]`.
    pub headers: Json,
    pub payload_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
    /// The broker's refusal.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedPage {
    pub items: Vec<ParkedMessage>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_before: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ParkedParams {
    /// Only rows older than this id.
    pub before: Option<i64>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
}

/// An optional whole number, also written `3.0`: JSON Schema's `integer` allows that
/// form, so a client validating against the document may send it.
fn whole_number<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(v) = n.as_u64() {
        return u32::try_from(v).map(Some).map_err(D::Error::custom);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Ok(Some(f as u32))
        }
        _ => Err(D::Error::custom(format!(
            "expected a whole number from 0 to {}, found {n}",
            u32::MAX
        ))),
    }
}

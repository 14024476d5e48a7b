//! Starting a saga from a trigger event: idempotent by event id (inbox) and by the
//! business key the definition maps from the event.

use serde_json::Value as Json;

use super::intake;
use super::transition::{Applier, ApplyError, StartOutcome, StartRequest};
use crate::definition::Definition;
use crate::messaging::envelope;
use crate::store;
use crate::telemetry::metrics;

/// What became of a trigger event.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOutcome {
    Started(StartOutcome),
    Duplicate,
    /// The event cannot start the saga (mapping failed, input invalid): dead-letter it.
    Invalid(String),
}

impl Applier {
    /// Starts `def` from a trigger event, idempotent by event id and by business key.
    pub async fn start_from_trigger(
        &self,
        def: &Definition,
        event: &envelope::InboundEvent,
    ) -> Result<TriggerOutcome, ApplyError> {
        let Some(trigger) = &def.trigger else {
            return Ok(TriggerOutcome::Invalid(
                "the definition has no trigger".into(),
            ));
        };
        let ctx = serde_json::json!({ "event": event.data });
        let key = match trigger.key.render(&ctx) {
            Ok(Json::String(s)) => s,
            Ok(Json::Null) => {
                return Ok(TriggerOutcome::Invalid(
                    "trigger key rendered to null".into(),
                ));
            }
            Ok(other) => other.to_string(),
            Err(e) => return Ok(TriggerOutcome::Invalid(format!("trigger key: {e}"))),
        };
        if let Some(problem) = intake::key_problem(&key) {
            return Ok(TriggerOutcome::Invalid(format!("trigger key: {problem}")));
        }
        let input = match trigger.input.render(&ctx) {
            Ok(v) => v,
            Err(e) => return Ok(TriggerOutcome::Invalid(format!("trigger input: {e}"))),
        };
        if let Some(path) = intake::nul_path(&input) {
            return Ok(TriggerOutcome::Invalid(format!(
                "trigger input at `{path}` contains U+0000, which cannot be stored"
            )));
        }
        let mut tx = self.store.begin().await?;
        let message_id = format!("trigger|{}|{}|{}", def.name, event.source, event.id);
        let fresh = store::claim_inbox(&mut tx, std::slice::from_ref(&message_id), &[None]).await?;
        if fresh.is_empty() {
            return Ok(TriggerOutcome::Duplicate);
        }
        let req = StartRequest {
            definition: def.name.clone(),
            input,
            key: Some(key),
            id: None,
            // Stored form: the trace state travels with the parent.
            traceparent: event
                .ext("traceparent")
                .map(|tp| match event.ext("tracestate") {
                    Some(ts) => format!("{tp}\n{ts}"),
                    None => tp.to_owned(),
                }),
        };
        let outcome = self.start_in_tx(&mut tx, def, req).await?;
        match &outcome {
            // Dead-lettered by the caller; no inbox row, so a redelivery is too.
            StartOutcome::Conflict(_) => return Ok(TriggerOutcome::Started(outcome)),
            StartOutcome::InvalidInput(errors) => {
                return Ok(TriggerOutcome::Invalid(format!(
                    "input rejected: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            StartOutcome::Rejected(r) => return Ok(TriggerOutcome::Invalid(r.to_string())),
            _ => {}
        }
        self.store.commit(tx, outcome.announcement()).await?;
        if let StartOutcome::Created(..) = outcome {
            metrics::saga_started(&def.name);
        }
        Ok(TriggerOutcome::Started(outcome))
    }
}

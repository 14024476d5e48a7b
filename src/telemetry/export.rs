//! What leaves the process: finished spans go through [`Pipelines`], which drops the
//! tracing fields that exist only for log lines and sends the demo participants' spans
//! out under a service of their own.
//!
//! `service.name` belongs to a span's resource, and an exporter sends every span with
//! one resource, so the participants need an exporter (and batch processor) of their
//! own. A second tracer provider would also need a second tracing-opentelemetry layer,
//! and two such layers in one subscriber build each other's spans (the span extension
//! API reaches only one of them). One provider whose processor routes each finished
//! span to one of two batch processors needs neither.

use std::time::Duration;

use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanProcessor};

/// Set on the participants' spans (and removed before export) to route them.
pub const PARTICIPANT_MARK: &str = "sagaflow.participant";

/// Span fields that put the saga on every log line inside a span (see `spans.rs`).
/// The spans carry the same facts as `saga.id` and `saga.step`, and `trace_id` is the
/// span's own trace id.
const LOG_ONLY_FIELDS: [&str; 3] = ["saga_id", "step", "trace_id"];

/// Appended to the service's name for the participants' resource.
const PARTICIPANTS_SUFFIX: &str = "-participants";
const SERVICE_NAME: &str = "service.name";

#[derive(Debug)]
pub struct Pipelines {
    service: BatchSpanProcessor,
    participants: BatchSpanProcessor,
}

impl Pipelines {
    pub fn new(service: BatchSpanProcessor, participants: BatchSpanProcessor) -> Pipelines {
        Pipelines {
            service,
            participants,
        }
    }
}

/// Whether the span was marked as a participant's; strips log-only fields and the mark.
fn clean(attributes: &mut Vec<KeyValue>) -> bool {
    let mut participant = false;
    attributes.retain(|kv| {
        let key = kv.key.as_str();
        if key == PARTICIPANT_MARK {
            participant = kv.value == Value::Bool(true);
            return false;
        }
        !LOG_ONLY_FIELDS.contains(&key)
    });
    participant
}

/// `resource` with `service.name` = the service's name followed by `-participants`.
pub fn participants_resource(resource: &Resource) -> Resource {
    let service = resource
        .get(&Key::from_static_str(SERVICE_NAME))
        .map(|v| v.as_str().into_owned())
        .unwrap_or_else(|| "sagaflow".to_owned());
    Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(format!("{service}{PARTICIPANTS_SUFFIX}"))
        .build()
}

impl SpanProcessor for Pipelines {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, mut span: SpanData) {
        if clean(&mut span.attributes) {
            self.participants.on_end(span);
        } else {
            self.service.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let service = self.service.force_flush();
        service.and(self.participants.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let service = self.service.shutdown_with_timeout(timeout);
        service.and(self.participants.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service.set_resource(resource);
        self.participants
            .set_resource(&participants_resource(resource));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_and_the_mark_are_dropped() {
        let mut attrs = vec![
            KeyValue::new("saga.id", "x"),
            KeyValue::new("saga_id", "x"),
            KeyValue::new("step", "s"),
            KeyValue::new("trace_id", "t"),
            KeyValue::new(PARTICIPANT_MARK, true),
        ];
        assert!(clean(&mut attrs));
        assert_eq!(attrs, vec![KeyValue::new("saga.id", "x")]);
        assert!(!clean(&mut attrs));
    }

    #[test]
    fn participants_get_their_own_service_name() {
        let service = Resource::builder_empty()
            .with_service_name("orders")
            .with_attribute(KeyValue::new("deployment.environment.name", "prod"))
            .build();
        let p = participants_resource(&service);
        let get = |k: &'static str| p.get(&Key::from_static_str(k));
        assert_eq!(
            get("service.name"),
            Some(Value::from("orders-participants"))
        );
        assert_eq!(
            get("deployment.environment.name"),
            Some(Value::from("prod"))
        );
    }
}

//! The spans of a saga's trace. Every one is created with an explicit parent (never the
//! ambient span), because one consumer batch or timer sweep carries many sagas.
//!
//! Log fields (`saga_id`, `step`, `trace_id`) are tracing fields, so every log line
//! inside these spans carries them; the OpenTelemetry attributes (`saga.*`,
//! `messaging.*`) go straight to the OTel span so logs are not cluttered twice.

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::propagation;

/// One span and the context it propagates.
#[derive(Debug, Clone)]
pub struct Traced {
    pub span: Span,
    /// The span's own context, or a synthetic one when no OTel layer records it.
    pub context: SpanContext,
}

impl Traced {
    fn open(span: Span, parent: Option<&SpanContext>, attrs: Vec<KeyValue>) -> Traced {
        for kv in attrs {
            span.set_attribute(kv.key, kv.value);
        }
        // Before anything reads the span's context: the OTel span is built (and its
        // parent fixed) on first access. An explicit empty parent makes a root rather
        // than inheriting whatever span happens to be current.
        let _ = span.set_parent(parent.map(propagation::as_parent).unwrap_or_default());
        let own = span.context().span().span_context().clone();
        let context = if own.is_valid() {
            own
        } else {
            propagation::synthetic_child(parent)
        };
        span.record("trace_id", display(context.trace_id()));
        Traced { span, context }
    }

    /// `traceparent` / `tracestate` headers that make the receiver a child of this span.
    pub fn headers(&self) -> Vec<(String, String)> {
        propagation::headers(&self.context)
    }

    pub fn stored(&self) -> String {
        propagation::to_stored(&self.context)
    }

    pub fn attr(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.span.set_attribute(key, value);
    }

    /// Marks the span failed; `kind` becomes `error.type`.
    pub fn error(&self, kind: &'static str, message: impl Into<String>) {
        self.span.set_attribute("error.type", kind);
        self.span.set_status(Status::error(message.into()));
    }
}

/// The saga a span belongs to.
#[derive(Debug, Clone, Copy)]
pub struct SagaRef<'a> {
    pub id: Uuid,
    pub name: &'a str,
}

impl SagaRef<'_> {
    fn attrs(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("saga.id", self.id.to_string()),
            KeyValue::new("saga.name", self.name.to_owned()),
        ]
    }
}

/// A message sent or received on behalf of a saga step.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    pub step: &'a str,
    pub attempt: u32,
    pub compensation: bool,
    pub topic: &'a str,
    pub message_id: &'a str,
    /// The Kafka message key (the definition's `key`, by default the saga id).
    pub key: &'a str,
}

impl MessageRef<'_> {
    fn attrs(&self, saga: &SagaRef<'_>, operation: &'static str) -> Vec<KeyValue> {
        let mut a = saga.attrs();
        a.extend([
            KeyValue::new("saga.step", self.step.to_owned()),
            KeyValue::new("saga.attempt", i64::from(self.attempt)),
            KeyValue::new(
                "saga.phase",
                if self.compensation {
                    "compensation"
                } else {
                    "command"
                },
            ),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", self.topic.to_owned()),
            KeyValue::new("messaging.operation.type", operation),
            KeyValue::new("messaging.operation.name", operation),
            KeyValue::new("messaging.message.id", self.message_id.to_owned()),
            KeyValue::new("messaging.kafka.message.key", self.key.to_owned()),
        ]);
        a
    }

    fn label(&self) -> String {
        if self.compensation {
            format!("{} compensation", self.step)
        } else {
            self.step.to_owned()
        }
    }
}

/// The saga's own root: continues the caller (the current HTTP span, or the
/// `traceparent` of the request or trigger event) or opens a new trace.
pub fn start(saga: SagaRef<'_>, caller: Option<&SpanContext>) -> Traced {
    let current = Span::current().context().span().span_context().clone();
    let parent = match caller {
        _ if current.is_valid() && caller.is_none_or(|c| c.trace_id() == current.trace_id()) => {
            Some(current)
        }
        other => other.cloned(),
    };
    let span = tracing::info_span!(
        target: "sagaflow::saga",
        "saga start",
        otel.name = format!("start {}", saga.name),
        otel.kind = "internal",
        saga_id = %saga.id,
        step = Empty,
        trace_id = Empty,
    );
    Traced::open(span, parent.as_ref(), saga.attrs())
}

/// A producer span for one command or compensation: its context goes in the headers.
pub fn send(
    parent: Option<&SpanContext>,
    saga: SagaRef<'_>,
    m: MessageRef<'_>,
    status: &str,
) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::saga",
        "saga send",
        otel.name = format!("send {}", m.label()),
        otel.kind = "producer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    let mut attrs = m.attrs(&saga, "send");
    attrs.push(KeyValue::new("saga.status", status.to_owned()));
    Traced::open(span, parent, attrs)
}

/// A consumer span for a reply: a child of the participant's span (the reply's
/// `traceparent`), or of the saga's stored context when the participant sent none.
pub fn process_reply(
    reply: Option<&SpanContext>,
    saga_cx: Option<&SpanContext>,
    saga: SagaRef<'_>,
    m: MessageRef<'_>,
    reply_type: &str,
) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::saga",
        "saga reply",
        otel.name = format!("process {} reply", m.label()),
        otel.kind = "consumer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    let mut attrs = m.attrs(&saga, "process");
    attrs.push(KeyValue::new("saga.reply_type", reply_type.to_owned()));
    let t = Traced::open(span, reply.or(saga_cx), attrs);
    if reply.is_some()
        && let Some(s) = saga_cx
    {
        t.span.add_link(s.clone());
    }
    t
}

/// A transition without an inbound message (timer, operator action): joins the saga's
/// trace as a child of its stored context, however long after the start it happens.
pub fn saga_event(
    saga_cx: Option<&SpanContext>,
    saga: SagaRef<'_>,
    event: &str,
    step: Option<&str>,
) -> Traced {
    let name = match step {
        Some(s) => format!("{event} {s}"),
        None => event.to_owned(),
    };
    let span = tracing::info_span!(
        target: "sagaflow::saga",
        "saga event",
        otel.name = name,
        otel.kind = "internal",
        saga_id = %saga.id,
        step = step,
        trace_id = Empty,
    );
    let mut attrs = saga.attrs();
    if let Some(s) = step {
        attrs.push(KeyValue::new("saga.step", s.to_owned()));
    }
    Traced::open(span, saga_cx, attrs)
}

/// A participant handling a command (the demo/test participant uses this).
pub fn participant_process(
    command: Option<&SpanContext>,
    saga: SagaRef<'_>,
    m: MessageRef<'_>,
) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::participant",
        "participant process",
        otel.name = format!("process {}", m.label()),
        otel.kind = "consumer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    Traced::open(span, command, m.attrs(&saga, "process"))
}

/// The participant's reply: its context is the reply's `traceparent`.
pub fn participant_reply(parent: &SpanContext, saga: SagaRef<'_>, m: MessageRef<'_>) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::participant",
        "participant reply",
        otel.name = format!("send {} reply", m.label()),
        otel.kind = "producer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    Traced::open(span, Some(parent), m.attrs(&saga, "send"))
}

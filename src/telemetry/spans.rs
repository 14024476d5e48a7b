//! The spans of a saga's trace. Every one is created with an explicit parent (never the
//! ambient span), because one consumer batch or timer sweep carries many sagas.
//!
//! Log fields (`saga_id`, `step`, `trace_id`) are tracing fields, so every log line
//! inside these spans carries them (the exporter drops them from the spans, which have
//! `saga.id` and `saga.step`); the OpenTelemetry attributes (`saga.*`, `messaging.*`,
//! `server.*`) go straight to the OTel span so logs are not cluttered twice. Messaging
//! attributes follow the OpenTelemetry conventions for Kafka (docs/observability.md).

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::export::PARTICIPANT_MARK;
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

    pub fn event(&self, name: &'static str, attrs: Vec<KeyValue>) {
        self.span.add_event(name, attrs);
    }

    /// Marks the span failed; `kind` becomes `error.type`.
    pub fn error(&self, kind: impl Into<opentelemetry::Value>, message: impl Into<String>) {
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

/// The broker a client reaches first: the first of its `bootstrap.servers`, which is
/// what `server.address` and `server.port` name (librdkafka's default port is 9092).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub address: String,
    pub port: u16,
}

impl Broker {
    /// From `bootstrap.servers` (`host:port,…`, each optionally `protocol://`).
    pub fn from_bootstrap(servers: &str) -> Option<Broker> {
        let first = servers.split(',').next()?.trim();
        let first = first.split_once("://").map_or(first, |(_, rest)| rest);
        let (address, port) = super::http::split_authority(first)?;
        Some(Broker {
            address: address.to_owned(),
            port: port.unwrap_or(9092),
        })
    }

    fn attrs(&self) -> [KeyValue; 2] {
        [
            KeyValue::new("server.address", self.address.clone()),
            KeyValue::new("server.port", i64::from(self.port)),
        ]
    }
}

/// Where a received message was read.
#[derive(Debug, Clone, Copy)]
pub struct Consumed<'a> {
    pub group: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub broker: Option<&'a Broker>,
}

impl Consumed<'_> {
    fn attrs(&self) -> Vec<KeyValue> {
        let mut a = vec![
            KeyValue::new("messaging.consumer.group.name", self.group.to_owned()),
            KeyValue::new(
                "messaging.destination.partition.id",
                self.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", self.offset),
        ];
        a.extend(self.broker.into_iter().flat_map(Broker::attrs));
        a
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
    /// For a received message: where it was read.
    pub consumed: Option<Consumed<'a>>,
}

impl MessageRef<'_> {
    /// `operation`: the `messaging.operation.type` (`create`, `send`, `process`), which
    /// is also its name here.
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
        a.extend(self.consumed.iter().flat_map(Consumed::attrs));
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

/// The creation of one command or compensation: a producer span around writing it to
/// the outbox (the relay's `send` span publishes it later). Its context goes in the
/// message's headers, so it is the message's creation context. Named after the step
/// rather than the topic: several steps may share a topic.
pub fn create(
    parent: Option<&SpanContext>,
    saga: SagaRef<'_>,
    m: MessageRef<'_>,
    status: &str,
) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::saga",
        "saga send",
        otel.name = format!("create {}", m.label()),
        otel.kind = "producer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    let mut attrs = m.attrs(&saga, "create");
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
    let mut attrs = m.attrs(&saga, "process");
    attrs.push(KeyValue::new(PARTICIPANT_MARK, true));
    Traced::open(span, command, attrs)
}

/// The participant's reply (`m.message_id` is the reply's id): its context is the
/// reply's `traceparent`.
pub fn participant_reply(
    parent: &SpanContext,
    saga: SagaRef<'_>,
    m: MessageRef<'_>,
    broker: Option<&Broker>,
) -> Traced {
    let span = tracing::info_span!(
        target: "sagaflow::participant",
        "participant reply",
        otel.name = format!("send {} reply", m.label()),
        otel.kind = "producer",
        saga_id = %saga.id,
        step = m.step,
        trace_id = Empty,
    );
    let mut attrs = m.attrs(&saga, "send");
    attrs.extend(broker.into_iter().flat_map(Broker::attrs));
    attrs.push(KeyValue::new(PARTICIPANT_MARK, true));
    Traced::open(span, Some(parent), attrs)
}

/// A message the relay publishes: its outbox row.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub headers: &'a [(String, String)],
}

impl Outgoing<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let (_, v) = self.headers.iter().find(|(k, _)| k == name)?;
        Some(v)
    }
}

/// Links kept per relay span: OpenTelemetry's default span link limit.
const MAX_LINKS: usize = 128;

/// One producer span per relay batch. Batches mix sagas, so it opens a trace of its
/// own and links to each message's creation context (its `traceparent`): a link per
/// message costs far less than a span per message. Named `send <topic>` when the batch
/// has one topic, else `send`.
pub fn publish(batch: &[Outgoing<'_>], broker: Option<&Broker>) -> Traced {
    let topic = batch
        .first()
        .map(|m| m.topic)
        .filter(|t| batch.iter().all(|m| m.topic == *t));
    let span = tracing::info_span!(
        target: "sagaflow::relay",
        "relay send",
        otel.name = topic.map_or_else(|| "send".to_owned(), |t| format!("send {t}")),
        otel.kind = "producer",
    );
    let mut attrs = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "send"),
    ];
    attrs.extend(topic.map(|t| KeyValue::new("messaging.destination.name", t.to_owned())));
    match batch {
        [one] => {
            let id = one.header("ce_id").unwrap_or_default().to_owned();
            attrs.push(KeyValue::new("messaging.message.id", id));
            attrs.push(KeyValue::new(
                "messaging.kafka.message.key",
                one.key.to_owned(),
            ));
        }
        many => attrs.push(KeyValue::new(
            "messaging.batch.message_count",
            i64::try_from(many.len()).unwrap_or(i64::MAX),
        )),
    }
    attrs.extend(broker.into_iter().flat_map(Broker::attrs));
    let t = Traced::open(span, None, attrs);
    // Links past the SDK's limit (128 by default) would be parsed and then dropped; a
    // span no subscriber records needs none.
    let linked = if t.span.is_disabled() { 0 } else { MAX_LINKS };
    for m in batch.iter().take(linked) {
        let created =
            propagation::from_headers(m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(cx) = created {
            let id = m.header("ce_id").unwrap_or_default().to_owned();
            t.span
                .add_link_with_attributes(cx, vec![KeyValue::new("messaging.message.id", id)]);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::Broker;

    #[test]
    fn the_first_bootstrap_server_is_the_broker() {
        let b = |s: &str| Broker::from_bootstrap(s).map(|b| (b.address, b.port));
        assert_eq!(b("127.0.0.1:29092"), Some(("127.0.0.1".into(), 29092)));
        assert_eq!(
            b(" kafka-0.kafka:9093, kafka-1.kafka:9093"),
            Some(("kafka-0.kafka".into(), 9093))
        );
        assert_eq!(b("SSL://broker"), Some(("broker".into(), 9092)));
        assert_eq!(b("[::1]:19092"), Some(("::1".into(), 19092)));
        assert_eq!(b(""), None);
    }
}

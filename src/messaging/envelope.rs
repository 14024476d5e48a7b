//! The wire format: CloudEvents 1.0 over Kafka (docs/protocol.md).
//!
//! Outgoing messages use binary content mode (attributes in `ce_*` headers, data as
//! the JSON body). Incoming replies and trigger events may use binary or structured
//! mode (`content-type: application/cloudevents+json`, the whole event as JSON).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::engine::{Lifecycle, Outgoing, Phase};

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_STRUCTURED: &str = "application/cloudevents+json";

/// Extension attributes sagaflow adds to commands and expects back on replies.
pub const EXT_SAGA_ID: &str = "sagaid";
pub const EXT_STEP: &str = "sagastep";
pub const EXT_ATTEMPT: &str = "sagaattempt";
pub const EXT_PHASE: &str = "sagaphase";
pub const EXT_REPLY_TO: &str = "sagareplyto";
pub const EXT_DEFINITION: &str = "sagadefinition";

/// A Kafka record ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

fn ce(name: &str) -> String {
    format!("ce_{name}")
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A command or compensation as a binary-mode CloudEvent; `trace_headers` are the
/// `traceparent`/`tracestate` of its producer span.
pub fn encode_command(
    out: &Outgoing,
    saga_id: Uuid,
    definition: &str,
    source: &str,
    now: DateTime<Utc>,
    trace_headers: &[(String, String)],
) -> Record {
    let mut headers = vec![
        (ce("specversion"), SPEC_VERSION.to_owned()),
        (ce("id"), out.command_id.to_string()),
        (ce("source"), source.to_owned()),
        (ce("type"), out.message_type.clone()),
        (ce("time"), time(now)),
        ("content-type".to_owned(), CONTENT_TYPE_JSON.to_owned()),
        (ce(EXT_SAGA_ID), saga_id.to_string()),
        (ce(EXT_DEFINITION), definition.to_owned()),
        (ce(EXT_STEP), out.step.clone()),
        (ce(EXT_ATTEMPT), out.attempt.to_string()),
        (ce(EXT_PHASE), out.phase.as_str().to_owned()),
        (ce(EXT_REPLY_TO), out.reply_topic.clone()),
    ];
    headers.extend(trace_headers.iter().cloned());
    headers.extend(out.headers.iter().cloned());
    Record {
        topic: out.topic.clone(),
        key: out.key.clone(),
        headers,
        payload: serde_json::to_vec(&out.payload).unwrap_or_default(),
    }
}

/// Who and what a lifecycle event is about.
#[derive(Debug, Clone)]
pub struct LifecycleContext<'a> {
    pub saga_id: Uuid,
    pub definition: &'a str,
    pub status: &'a str,
    pub event_id: Uuid,
    pub topic: &'a str,
    pub source: &'a str,
    pub now: DateTime<Utc>,
    /// Keep the saga's input in `started` events (`security.lifecycle_input`); it may
    /// hold personal data that every reader of the lifecycle topic would see.
    pub include_input: bool,
}

/// A lifecycle event (`sagaflow.saga.started`, …) for other services to react to.
pub fn encode_lifecycle(event: &Lifecycle, cx: &LifecycleContext<'_>) -> Record {
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let headers = vec![
        (ce("specversion"), SPEC_VERSION.to_owned()),
        (ce("id"), cx.event_id.to_string()),
        (ce("source"), cx.source.to_owned()),
        (ce("type"), format!("sagaflow.saga.{kind}")),
        (ce("time"), time(cx.now)),
        ("content-type".to_owned(), CONTENT_TYPE_JSON.to_owned()),
        (ce(EXT_SAGA_ID), cx.saga_id.to_string()),
        (ce(EXT_DEFINITION), cx.definition.to_owned()),
    ];
    let mut detail = event.detail.clone();
    if !cx.include_input
        && let Some(map) = detail.as_object_mut()
    {
        map.remove("input");
    }
    let data = json!({
        "saga_id": cx.saga_id,
        "definition": cx.definition,
        "status": cx.status,
        "step": event.step,
        "detail": detail,
    });
    Record {
        topic: cx.topic.to_owned(),
        key: cx.saga_id.to_string(),
        headers,
        payload: serde_json::to_vec(&data).unwrap_or_default(),
    }
}

/// A received CloudEvent, whichever mode it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub data: Json,
    /// Extension attributes and `traceparent`/`tracestate`, by name without `ce_`.
    pub extensions: Vec<(String, String)>,
}

impl InboundEvent {
    pub fn ext(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a message could not be read; becomes the `dlq-reason` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing CloudEvents attribute `{0}`")]
    Missing(&'static str),
    #[error("header `{0}` is not valid UTF-8")]
    NotUtf8(String),
    #[error("unsupported specversion `{0}` (expected 1.0)")]
    SpecVersion(String),
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("attribute `{name}` is invalid: {reason}")]
    BadAttribute { name: &'static str, reason: String },
}

/// Decodes a Kafka message (headers as raw bytes) into a CloudEvent.
pub fn decode(
    headers: &[(String, Vec<u8>)],
    payload: Option<&[u8]>,
) -> Result<InboundEvent, DecodeError> {
    let mut text = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let v = String::from_utf8(v.clone()).map_err(|_| DecodeError::NotUtf8(k.clone()))?;
        text.push((k.to_ascii_lowercase(), v));
    }
    let header = |name: &str| {
        text.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let structured =
        header("content-type").is_some_and(|ct| ct.starts_with(CONTENT_TYPE_STRUCTURED));
    if structured {
        return decode_structured(payload.unwrap_or_default(), &text);
    }
    let required = |attr: &'static str| {
        header(&ce(attr))
            .map(str::to_owned)
            .ok_or(DecodeError::Missing(attr))
    };
    let spec = required("specversion")?;
    if spec != SPEC_VERSION {
        return Err(DecodeError::SpecVersion(spec));
    }
    let data = match payload {
        None | Some([]) => Json::Null,
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| DecodeError::BadJson(e.to_string()))?
        }
    };
    let mut extensions = Vec::new();
    for (k, v) in &text {
        if let Some(name) = k.strip_prefix("ce_") {
            if !matches!(name, "specversion" | "id" | "source" | "type" | "time") {
                extensions.push((name.to_owned(), v.clone()));
            }
        } else if k == "traceparent" || k == "tracestate" {
            extensions.push((k.clone(), v.clone()));
        }
    }
    Ok(InboundEvent {
        id: required("id")?,
        source: required("source")?,
        event_type: required("type")?,
        data,
        extensions,
    })
}

fn decode_structured(
    payload: &[u8],
    headers: &[(String, String)],
) -> Result<InboundEvent, DecodeError> {
    let body: Json =
        serde_json::from_slice(payload).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let Json::Object(mut map) = body else {
        return Err(DecodeError::BadJson(
            "a structured CloudEvent must be a JSON object".into(),
        ));
    };
    let mut take = |attr: &'static str| match map.remove(attr) {
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(DecodeError::BadAttribute {
            name: attr,
            reason: "must be a string".into(),
        }),
        None => Err(DecodeError::Missing(attr)),
    };
    let spec = take("specversion")?;
    if spec != SPEC_VERSION {
        return Err(DecodeError::SpecVersion(spec));
    }
    let id = take("id")?;
    let source = take("source")?;
    let event_type = take("type")?;
    let data = map.remove("data").unwrap_or(Json::Null);
    let mut extensions: Vec<(String, String)> = map
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "time" | "datacontenttype" | "dataschema" | "subject"
            )
        })
        .map(|(k, v)| {
            let s = match v {
                Json::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect();
    for (k, v) in headers {
        if k == "traceparent" || k == "tracestate" {
            extensions.push((k.clone(), v.clone()));
        }
    }
    Ok(InboundEvent {
        id,
        source,
        event_type,
        data,
        extensions,
    })
}

/// The reply-specific attributes of an inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyAddress {
    pub saga_id: Uuid,
    pub step: String,
    pub attempt: u32,
    pub phase: Phase,
}

pub fn reply_address(event: &InboundEvent) -> Result<ReplyAddress, DecodeError> {
    let get = |name: &'static str| event.ext(name).ok_or(DecodeError::Missing(name));
    let saga_id =
        get(EXT_SAGA_ID)?
            .parse()
            .map_err(|e: uuid::Error| DecodeError::BadAttribute {
                name: EXT_SAGA_ID,
                reason: e.to_string(),
            })?;
    let attempt = get(EXT_ATTEMPT)?
        .parse()
        .map_err(|e: std::num::ParseIntError| DecodeError::BadAttribute {
            name: EXT_ATTEMPT,
            reason: e.to_string(),
        })?;
    let phase = match event.ext(EXT_PHASE).unwrap_or("command") {
        "command" => Phase::Command,
        "compensation" => Phase::Compensation,
        other => {
            return Err(DecodeError::BadAttribute {
                name: EXT_PHASE,
                reason: format!("`{other}` is neither `command` nor `compensation`"),
            });
        }
    };
    Ok(ReplyAddress {
        saga_id,
        step: get(EXT_STEP)?.to_owned(),
        attempt,
        phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(h: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn binary_reply_round_trips_its_address() {
        let id = Uuid::from_u128(1);
        let h = bytes(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "r-1"),
            ("ce_source", "inventory"),
            ("ce_type", "stock_reserved"),
            ("ce_sagaid", &id.to_string()),
            ("ce_sagastep", "reserve"),
            ("ce_sagaattempt", "2"),
            ("ce_sagaphase", "compensation"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let ev = decode(&h, Some(br#"{"id":"R"}"#)).expect("valid");
        assert_eq!(ev.event_type, "stock_reserved");
        assert_eq!(ev.data, json!({"id": "R"}));
        assert!(ev.ext("traceparent").is_some());
        let addr = reply_address(&ev).expect("addressed");
        assert_eq!(
            addr,
            ReplyAddress {
                saga_id: id,
                step: "reserve".into(),
                attempt: 2,
                phase: Phase::Compensation
            }
        );
    }

    #[test]
    fn structured_reply_is_accepted() {
        let body = json!({"specversion": "1.0", "id": "x", "source": "s", "type": "t",
                          "sagaid": Uuid::from_u128(2).to_string(), "sagastep": "a", "sagaattempt": 1, "data": {"k": 1}});
        let h = bytes(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let ev = decode(&h, Some(body.to_string().as_bytes())).expect("valid");
        assert_eq!(ev.data, json!({"k": 1}));
        assert_eq!(reply_address(&ev).expect("addressed").attempt, 1);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(
            decode(&[], Some(b"\x00\x01")),
            Err(DecodeError::Missing("specversion"))
        );
        let h = bytes(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "1"),
            ("ce_source", "s"),
            ("ce_type", "t"),
        ]);
        assert!(matches!(
            decode(&h, Some(b"{nope")),
            Err(DecodeError::BadJson(_))
        ));
        let h = bytes(&[("content-type", CONTENT_TYPE_STRUCTURED)]);
        assert!(matches!(
            decode(&h, Some(b"[1]")),
            Err(DecodeError::BadJson(_))
        ));
    }

    #[test]
    fn a_reply_without_saga_attributes_is_unroutable() {
        let h = bytes(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "1"),
            ("ce_source", "s"),
            ("ce_type", "t"),
        ]);
        let ev = decode(&h, None).expect("valid event");
        assert_eq!(reply_address(&ev), Err(DecodeError::Missing(EXT_SAGA_ID)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod lifecycle_tests {
    use super::*;
    use crate::engine::LifecycleKind;

    fn started(include_input: bool) -> Json {
        let event = Lifecycle {
            kind: LifecycleKind::Started,
            step: None,
            detail: json!({"input": {"card": "4111"}}),
        };
        let cx = LifecycleContext {
            saga_id: Uuid::nil(),
            definition: "d",
            status: "running",
            event_id: Uuid::nil(),
            topic: "t",
            source: "/s",
            now: Utc::now(),
            include_input,
        };
        serde_json::from_slice(&encode_lifecycle(&event, &cx).payload).unwrap()
    }

    #[test]
    fn started_events_carry_the_input_only_when_configured() {
        assert_eq!(started(false)["detail"], json!({}));
        assert_eq!(started(true)["detail"]["input"]["card"], "4111");
    }
}

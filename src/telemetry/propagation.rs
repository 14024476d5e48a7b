//! W3C trace context in and out of Kafka headers and the `sagas.trace_context` column.
//!
//! Works on plain strings and `SpanContext`s rather than on the tracing subscriber, so
//! a context is propagated (and generated) even when no OpenTelemetry layer is
//! installed: participants and logs still see one trace id per saga.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

struct Pair<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Pair<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The remote span context of a `traceparent` (and `tracestate`); `None` when absent or
/// malformed (a bad header from a caller must not fail a saga).
pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let traceparent = traceparent?;
    let cx = TraceContextPropagator::new().extract(&Pair {
        traceparent: Some(traceparent),
        tracestate,
    });
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace context from a list of headers (case-insensitive names).
pub fn from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<SpanContext> {
    let mut tp = None;
    let mut ts = None;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(TRACEPARENT) {
            tp = Some(v);
        } else if k.eq_ignore_ascii_case(TRACESTATE) {
            ts = Some(v);
        }
    }
    parse(tp, ts)
}

pub fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// `traceparent` and, when not empty, `tracestate` headers for `sc`.
pub fn headers(sc: &SpanContext) -> Vec<(String, String)> {
    let mut h = vec![(TRACEPARENT.to_owned(), traceparent(sc))];
    let state = sc.trace_state().header();
    if !state.is_empty() {
        h.push((TRACESTATE.to_owned(), state));
    }
    h
}

/// The stored form of a saga's context: its `traceparent`, then a newline and the
/// `tracestate` when there is one. A bare `traceparent` (as the HTTP API stores a
/// caller's header) reads back too.
pub fn to_stored(sc: &SpanContext) -> String {
    let state = sc.trace_state().header();
    if state.is_empty() {
        traceparent(sc)
    } else {
        format!("{}\n{state}", traceparent(sc))
    }
}

pub fn from_stored(stored: Option<&str>) -> Option<SpanContext> {
    let stored = stored?;
    match stored.split_once('\n') {
        Some((tp, ts)) => parse(Some(tp.trim()), Some(ts.trim())),
        None => parse(Some(stored.trim()), None),
    }
}

/// A parent usable by `tracing-opentelemetry`'s `set_parent`.
pub fn as_parent(sc: &SpanContext) -> Context {
    Context::new().with_remote_span_context(sc.clone())
}

/// A new span id under `parent` (or a new trace when there is none): what a span
/// would have had, for when no OpenTelemetry layer is recording.
pub fn synthetic_child(parent: Option<&SpanContext>) -> SpanContext {
    let ids = RandomIdGenerator::default();
    let (trace_id, state): (TraceId, TraceState) = match parent {
        Some(p) if p.is_valid() => (p.trace_id(), p.trace_state().clone()),
        _ => (ids.new_trace_id(), TraceState::default()),
    };
    let span_id: SpanId = ids.new_span_id();
    SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, state)
}

/// A new span id under `parent`, keeping its trace id, flags and state.
pub fn child_of(parent: &SpanContext) -> SpanContext {
    let span_id: SpanId = RandomIdGenerator::default().new_span_id();
    SpanContext::new(
        parent.trace_id(),
        span_id,
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn stored_form_round_trips_with_and_without_tracestate() {
        let sc = parse(Some(TP), Some("vendor=abc")).expect("valid");
        assert_eq!(traceparent(&sc), TP);
        let back = from_stored(Some(&to_stored(&sc))).expect("valid");
        assert_eq!(back.trace_state().header(), "vendor=abc");
        assert_eq!(
            from_stored(Some(TP)).map(|s| s.span_id()),
            Some(sc.span_id())
        );
        assert_eq!(headers(&sc).len(), 2);
    }

    #[test]
    fn garbage_is_no_context() {
        assert!(parse(Some("00-nope"), None).is_none());
        assert!(from_stored(None).is_none());
        assert!(from_headers([("TraceParent", TP)]).is_some());
    }

    #[test]
    fn synthetic_children_keep_the_trace() {
        let p = parse(Some(TP), None).expect("valid");
        let c = synthetic_child(Some(&p));
        assert_eq!(c.trace_id(), p.trace_id());
        assert_ne!(c.span_id(), p.span_id());
        assert!(synthetic_child(None).is_valid());
    }
}

"""A consumer span per message, child of the command's ``traceparent``, via the OpenTelemetry API.

Only ``opentelemetry-api`` is required. Without an SDK the API's spans are non-recording and
carry their parent's span id; the reply must still name a span of its own, so a fresh span id
is drawn then (protocol/README.md, "Trace").
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("sagaflow_participant")


@contextmanager
def consumer_span(
    topic: str, traceparent: str | None, tracestate: str | None
) -> Iterator[str | None]:
    """Opens the processing span; yields the reply's ``traceparent`` (None without a parent)."""
    carrier = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
    parent_context = _PROPAGATOR.extract(carrier)
    parent = trace.get_current_span(parent_context).get_span_context()
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic}
    with _TRACER.start_as_current_span(
        f"{topic} process", context=parent_context, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield child_traceparent(parent, span.get_span_context())


def child_traceparent(parent: SpanContext, own: SpanContext) -> str | None:
    """The reply's traceparent: the parent's trace id and flags, the processing span's id."""
    if not parent.is_valid:
        return None
    span_id = own.span_id
    if not own.is_valid or own.trace_id != parent.trace_id or span_id == parent.span_id:
        span_id = _fresh_span_id(parent.span_id)
    return f"00-{parent.trace_id:032x}-{span_id:016x}-{int(parent.trace_flags):02x}"


def _fresh_span_id(avoid: int) -> int:
    while True:
        span_id = secrets.randbits(64)
        if span_id not in (0, avoid):
            return span_id

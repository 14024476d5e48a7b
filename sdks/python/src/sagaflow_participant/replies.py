"""The records a participant produces: replies (binary mode) and dead-letter copies."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from .envelope import Envelope
from .model import Message, Outcome, Record


def reply(envelope: Envelope, outcome: Outcome, source: str, traceparent: str | None) -> Record:
    """The reply to ``envelope`` carrying ``outcome``; a repeat gets a new ``ce_id`` too."""
    command = envelope.command
    headers = [
        ("ce_specversion", "1.0"),
        ("ce_id", str(uuid.uuid4())),
        ("ce_source", source),
        ("ce_type", outcome.reply_type),
        ("ce_time", _now()),
        ("content-type", "application/json"),
        ("ce_sagaid", command.saga_id),
        ("ce_sagastep", command.step),
        # Copied from this message, not the one that produced the outcome: sagaflow checks
        # the token against the attempt it names.
        ("ce_sagaattempt", envelope.attempt_text),
        ("ce_sagaphase", command.phase),
        ("ce_sagatoken", command.token),
    ]
    if traceparent:
        headers.append(("traceparent", traceparent))
        if envelope.tracestate:
            headers.append(("tracestate", envelope.tracestate))
    return Record(
        kind="reply",
        topic=command.reply_to,
        key=command.saga_id.encode(),
        value=json.dumps(outcome.payload, separators=(",", ":")).encode(),
        headers=[(name, value.encode()) for name, value in headers],
    )


def dead_letter(message: Message, topic: str, reason: str) -> Record:
    """The original record, bytes unchanged, plus the four ``dlq-*`` headers sagaflow adds."""
    extra = [
        ("dlq-reason", reason),
        ("dlq-original-topic", message.topic),
        ("dlq-original-partition", str(message.partition)),
        ("dlq-original-offset", str(message.offset)),
    ]
    return Record(
        kind="dead_letter",
        topic=topic,
        key=message.key,
        value=message.value,
        headers=list(message.headers) + [(name, value.encode()) for name, value in extra],
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

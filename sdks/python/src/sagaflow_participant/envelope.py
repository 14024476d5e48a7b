"""Decoding a Kafka record into a command: CloudEvents 1.0, binary or structured mode.

Every reason a record is refused becomes its ``dlq-reason`` header, worded like sagaflow's own
(protocol/README.md, "Dead-letter").
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .model import PHASES, Command, Message

STRUCTURED = "application/cloudevents+json"
#: Attributes a command must carry, in the order they are checked.
CORE = ("specversion", "id", "source", "type")
EXTENSIONS = ("sagaid", "sagastep", "sagaattempt", "sagaphase", "sagareplyto", "sagatoken")
_DIGITS = re.compile(r"[0-9]+")


class DecodeError(Exception):
    """The record is not a command this library can answer; ``str()`` is the dlq-reason."""


@dataclass(frozen=True)
class Envelope:
    """A decoded command plus what the reply copies verbatim from it."""

    command: Command
    attempt_text: str
    traceparent: str | None
    tracestate: str | None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json would accept NaN and Infinity


def _parse(raw: bytes) -> Any:
    return json.loads(raw, parse_constant=_no_constants)


def text_headers(message: Message) -> dict[str, str]:
    """Header names lower-cased, first value of a repeated name kept, every value UTF-8."""
    found: dict[str, str] = {}
    for name, raw in message.headers:
        try:
            value = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"header `{name}` is not valid UTF-8") from None
        found.setdefault(name.lower(), value)
    return found


def decode(message: Message) -> Envelope:
    headers = text_headers(message)
    if headers.get("content-type", "").startswith(STRUCTURED):
        attrs, payload = _structured(message.value)
        _check_attributes(attrs)
        trace = {k: attrs.get(k, headers.get(k)) for k in ("traceparent", "tracestate")}
    else:
        attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
        trace = {k: headers.get(k) for k in ("traceparent", "tracestate")}
        _check_attributes(attrs)
        payload = _binary_payload(message.value)
    attempt_text = str(attrs["sagaattempt"])
    command = Command(
        id=attrs["id"],
        type=attrs["type"],
        source=attrs["source"],
        saga_id=attrs["sagaid"],
        definition=_optional_string(attrs.get("sagadefinition")),
        step=attrs["sagastep"],
        attempt=int(attempt_text),
        phase=attrs["sagaphase"],
        reply_to=attrs["sagareplyto"],
        token=attrs["sagatoken"],
        payload=payload,
        headers=list(message.headers),
    )
    return Envelope(
        command,
        attempt_text,
        _optional_string(trace["traceparent"]),
        _optional_string(trace["tracestate"]),
    )


def _structured(value: bytes | None) -> tuple[dict[str, Any], Any]:
    try:
        event = _parse(value or b"")
    except ValueError as e:
        raise DecodeError(f"body is not valid JSON: {e}") from None
    if not isinstance(event, dict):
        raise DecodeError("body is not valid JSON: a structured CloudEvent must be a JSON object")
    payload = event.pop("data", None)
    return event, payload


def _binary_payload(value: bytes | None) -> Any:
    if not value:
        return None
    try:
        return _parse(value)
    except ValueError as e:
        raise DecodeError(f"body is not valid JSON: {e}") from None


def _check_attributes(attrs: dict[str, Any]) -> None:
    """Raises the first problem, in the order protocol/README.md lists the attributes."""
    for name in CORE + EXTENSIONS:
        if name not in attrs:
            raise DecodeError(f"missing CloudEvents attribute `{name}`")
        value = attrs[name]
        if name == "sagaattempt" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # structured mode may send the attempt as a JSON number
        if not isinstance(value, str):
            raise DecodeError(f"attribute `{name}` is invalid: must be a string")
        if name == "specversion" and value != "1.0":
            raise DecodeError(f"unsupported specversion `{value}` (expected 1.0)")
        problem = _invalid(name, value)
        if problem:
            raise DecodeError(f"attribute `{name}` is invalid: {problem}")


def _invalid(name: str, value: str) -> str | None:
    if value == "":
        # An empty reply topic or step could never be answered or stored: refuse it now
        # rather than retrying its reply for ever.
        return "must not be empty"
    if name == "sagaid":
        try:
            uuid.UUID(value)
        except ValueError:
            return f"`{value}` is not a UUID"
    elif name == "sagaattempt":
        if not _DIGITS.fullmatch(value) or int(value) < 1:
            return f"`{value}` is not an integer ≥ 1"
    elif name == "sagaphase" and value not in PHASES:
        return f"`{value}` is neither `command` nor `compensation`"
    return None


def _optional_string(value: Any) -> str | None:
    return value if isinstance(value, str) else None

"""Runs one shared test vector (protocol/vectors/*.json) against a participant and a store."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

from sagaflow_participant import Command, Failure, Message, Participant, Record, Store, Success

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class ScriptedHandler:
    """Stands in for every handler: checks it is called as the step says, returns its result."""

    def __init__(self) -> None:
        self.step: dict[str, Any] | None = None
        self.calls: list[Command] = []

    def __call__(self, command: Command) -> Success | Failure:
        self.calls.append(command)
        assert self.step is not None, f"no handler call expected, got {command.type}"
        result = self.step["result"]
        if "success" in result:
            return Success(result["success"])
        f = result["failure"]
        return Failure(f["type"], f["payload"], f["retryable"])


def run_vector(path: Path, store: Store) -> None:
    doc = json.loads(path.read_text())
    spec = doc["participant"]
    participant = Participant(
        spec["source"], store=store, dead_letter_topic=spec["dead_letter_topic"]
    )
    handler = ScriptedHandler()
    for h in spec["handlers"]:
        participant.register(
            h["phase"], h["type"], handler, success=h["success"], refusal=h.get("refusal")
        )
    reply_ids: set[str] = set()
    for index, step in enumerate(doc["steps"]):
        handler.step, handler.calls = step["handler"], []
        record = participant.process(message(step["message"]))
        where = f"{path.name} step {index}"
        if step["handler"] is None:
            assert handler.calls == [], f"{where}: handler called"
        else:
            assert len(handler.calls) == 1, f"{where}: {len(handler.calls)} handler calls"
            check_call(handler.calls[0], step["handler"]["call"], where)
        check_expect(record, step["expect"], reply_ids, where)


def message(m: dict[str, Any]) -> Message:
    def raw(value: str | dict[str, str]) -> bytes:
        return base64.b64decode(value["base64"]) if isinstance(value, dict) else value.encode()

    return Message(
        topic=m["topic"],
        partition=m["partition"],
        offset=m["offset"],
        key=None if m["key"] is None else m["key"].encode(),
        value=m["value"].encode(),
        headers=[(name, raw(value)) for name, value in m["headers"]],
    )


def check_call(command: Command, call: dict[str, Any], where: str) -> None:
    got = {
        "id": command.id,
        "type": command.type,
        "phase": command.phase,
        "saga_id": command.saga_id,
        "definition": command.definition,
        "step": command.step,
        "attempt": command.attempt,
        "reply_to": command.reply_to,
        "token": command.token,
        "payload": command.payload,
    }
    assert got == call, f"{where}: handler got {got}"


def check_expect(
    record: Record | None, expect: dict[str, Any], reply_ids: set[str], where: str
) -> None:
    if "skip" in expect:
        assert record is None, f"{where}: expected nothing, got {record}"
    elif "reply" in expect:
        assert record is not None and record.kind == "reply", f"{where}: got {record}"
        check_reply(record, expect["reply"], reply_ids, where)
    else:
        assert record is not None and record.kind == "dead_letter", f"{where}: got {record}"
        check_dead_letter(record, expect["dead_letter"], where)


def check_reply(record: Record, want: dict[str, Any], reply_ids: set[str], where: str) -> None:
    assert record.topic == want["topic"], where
    assert record.key == want["key"].encode(), where
    headers = {name.lower(): (value or b"").decode() for name, value in record.headers}
    assert len(headers) == len(record.headers), f"{where}: a header repeats"
    expected_names = {n.lower() for n in want["headers"]} | {n.lower() for n in want["generated"]}
    assert set(headers) == expected_names, f"{where}: headers {sorted(headers)}"
    for name, value in want["headers"].items():
        assert headers[name.lower()] == value, f"{where}: {name}={headers[name.lower()]!r}"
    for name, kind in want["generated"].items():
        check_generated(headers[name.lower()], kind, reply_ids, f"{where}: {name}")
    assert json.loads(record.value or b"") == want["body"], f"{where}: body {record.value!r}"


def check_generated(value: str, kind: str, reply_ids: set[str], where: str) -> None:
    if kind == "uuid":
        uuid.UUID(value)
        assert value not in reply_ids, f"{where}: ce_id reused"
        reply_ids.add(value)
    elif kind == "rfc3339":
        assert RFC3339_MS.match(value), f"{where}: {value!r}"
    elif kind.startswith("child_of:"):
        parent, child = TRACEPARENT.match(kind[len("child_of:") :]), TRACEPARENT.match(value)
        assert parent and child, f"{where}: {value!r}"
        assert child[1] == parent[1] and child[3] == parent[3], f"{where}: {value!r}"
        assert child[2] != "0" * 16 and child[2] != parent[2], f"{where}: {value!r}"
    else:
        raise AssertionError(f"{where}: unknown generated kind {kind!r}")


def check_dead_letter(record: Record, want: dict[str, Any], where: str) -> None:
    assert record.topic == want["topic"], where
    assert record.key == (None if want["key"] is None else want["key"].encode()), where
    assert record.value == want["value"].encode(), where
    assert len(record.headers) == len(want["headers"]), f"{where}: {record.headers}"
    for (name, value), (want_name, want_value) in zip(record.headers, want["headers"], strict=True):
        assert name == want_name, f"{where}: header {name} != {want_name}"
        if isinstance(want_value, dict) and "prefix" in want_value:
            text = (value or b"").decode()
            assert text.startswith(want_value["prefix"]), f"{where}: {name}={text!r}"
        elif isinstance(want_value, dict):
            assert value == base64.b64decode(want_value["base64"]), f"{where}: {name}"
        else:
            assert value == want_value.encode(), f"{where}: {name}={value!r}"

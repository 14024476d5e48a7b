"""The example services answer as the table of protocol/README.md says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests_support import SAGA, command_message

from sagaflow_participant import MemoryStore, Record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import example_services


def body(record: Record | None) -> tuple[str, object]:
    assert record is not None and record.kind == "reply"
    headers = dict(record.headers)
    return headers["ce_type"].decode(), json.loads(record.value or b"")


def test_success_carries_the_field_named_after_the_saga() -> None:
    p = example_services.build("/example-python", MemoryStore(), "dlq", set())
    record = p.process(command_message(ctype="payments.capture", step="capture_payment"))
    assert body(record) == ("payments.captured", {"payment_id": f"payment_id-{SAGA[:8]}"})
    assert dict(record.headers)["ce_source"] == b"/example-python"


def test_fail_steps_fail_then_compensations_undo() -> None:
    p = example_services.build("/x", MemoryStore(), "dlq", {"capture_payment"})
    failed = p.process(command_message(ctype="payments.capture", step="capture_payment"))
    assert body(failed) == (
        "payments.capture_rejected",
        {"error": "capture_payment failed on purpose"},
    )
    p.process(command_message(ctype="payments.authorize", step="authorize_payment"))
    undone = p.process(
        command_message(
            ctype="payments.void_authorization",
            step="authorize_payment",
            phase="compensation",
            command_id="c-2",
        )
    )
    assert body(undone) == ("payments.authorization_voided", {"undone": True})


def test_every_table_row_is_registered() -> None:
    p = example_services.build("/x", MemoryStore(), "dlq", set())
    registered = {(r.phase, r.type) for r in p._processor.registrations.values()}
    assert len(registered) == 12 + 6
    assert ("compensation", "travel.car.cancel") in registered
    assert len(example_services.TOPICS) == 10

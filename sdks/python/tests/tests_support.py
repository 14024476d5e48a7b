"""Small builders shared by the focused tests."""

from __future__ import annotations

import json

from sagaflow_participant import Message

SAGA = "019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b"


def command_message(
    offset: int = 0,
    ctype: str = "inventory.reserve_stock",
    step: str = "reserve_stock",
    command_id: str = "c-1",
    attempt: int = 1,
    phase: str = "command",
) -> Message:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": command_id,
        "ce_source": "/sagaflow",
        "ce_type": ctype,
        "content-type": "application/json",
        "ce_sagaid": SAGA,
        "ce_sagastep": step,
        "ce_sagaattempt": str(attempt),
        "ce_sagaphase": phase,
        "ce_sagareplyto": "orders.saga-replies",
        "ce_sagatoken": "tok",
    }
    return Message(
        topic="inventory.commands",
        partition=0,
        offset=offset,
        key=b"k",
        value=json.dumps({"order_id": "o-1"}).encode(),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )

"""Smoke test of run-example against a real broker (not part of ./check: it needs Kafka).

    .venv/bin/python tools/smoke.py [--bootstrap 127.0.0.1:29092] [--database-url URL]

Starts ./run-example on a command topic created only after it subscribed, sends one command
and one garbage record, checks the reply, the dead-letter copy and the committed offsets, then
sends SIGTERM and checks a clean exit within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:8]
COMMANDS, REPLIES, DLQ = (f"sdk-python.smoke-{RUN}.{t}" for t in ("commands", "replies", "dlq"))
GROUP = f"sdk-python-smoke-{RUN}"


def create(admin: AdminClient, *topics: str) -> None:
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(30)


def wait_for(what: str, probe, deadline_s: float = 60.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
    raise SystemExit(f"FAIL: no {what} within {deadline_s}s")


def read_one(bootstrap: str, topic: str):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{GROUP}-reader-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    try:
        return wait_for(f"record on {topic}", lambda: _valid(c.poll(0.5)))
    finally:
        c.close()


def _valid(msg):
    return msg if msg is not None and msg.error() is None else None


def committed(bootstrap: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        return c.committed([TopicPartition(COMMANDS, 0)], timeout=10)[0].offset
    finally:
        c.close()


def command(saga: str) -> dict:
    return dict(
        key=b"cus-1",
        value=json.dumps({"order_id": "ord-1"}).encode(),
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("ce_source", b"/sagaflow"),
            ("ce_type", b"inventory.reserve_stock"),
            ("content-type", b"application/json"),
            ("ce_sagaid", saga.encode()),
            ("ce_sagadefinition", b"order-fulfilment"),
            ("ce_sagastep", b"reserve_stock"),
            ("ce_sagaattempt", b"1"),
            ("ce_sagaphase", b"command"),
            ("ce_sagareplyto", REPLIES.encode()),
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b43262257c1ffd99-01"),
            ("ce_sagatoken", b"smoke-token"),
        ],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:29092")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    create(admin, REPLIES, DLQ)
    env = dict(
        os.environ,
        BOOTSTRAP_SERVERS=args.bootstrap,
        GROUP_ID=GROUP,
        TOPICS=COMMANDS,
        DEAD_LETTER_TOPIC=DLQ,
        SOURCE="/smoke-python",
    )
    env.pop("DATABASE_URL", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    example = subprocess.Popen([str(HERE / "run-example")], env=env)
    try:
        time.sleep(3)  # a manual smoke tool: let it subscribe before its topic exists
        create(admin, COMMANDS)
        saga = str(uuid.uuid4())
        producer = Producer({"bootstrap.servers": args.bootstrap})
        producer.produce(COMMANDS, **command(saga))
        producer.produce(COMMANDS, key=b"junk", value=b"not json", headers=[("x", b"y")])
        producer.flush(10)
        reply = read_one(args.bootstrap, REPLIES)
        headers = {k: v.decode() for k, v in reply.headers()}
        print("reply:", reply.key(), reply.value(), json.dumps(headers, indent=1))
        assert reply.key().decode() == saga
        assert json.loads(reply.value()) == {"reservation_id": f"reservation_id-{saga[:8]}"}
        assert headers["ce_type"] == "inventory.stock_reserved"
        assert headers["ce_sagatoken"] == "smoke-token"
        assert headers["ce_source"] == "/smoke-python"
        dead = read_one(args.bootstrap, DLQ)
        print("dead letter:", dead.value(), dead.headers())
        wait_for("committed offset 2", lambda: committed(args.bootstrap) == 2)
        print("committed offset: 2")
        started = time.monotonic()
        example.send_signal(signal.SIGTERM)
        code = example.wait(15)
        print(f"exit code {code} after SIGTERM in {time.monotonic() - started:.1f}s")
        assert code == 0
        print("SMOKE OK")
    finally:
        if example.poll() is None:
            example.kill()
        admin.delete_topics([COMMANDS, REPLIES, DLQ])


if __name__ == "__main__":
    main()

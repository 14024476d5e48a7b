"""The client settings, and the poll loop's order: reply acknowledged, then offset committed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from tests_support import command_message

from sagaflow_participant import Command, Message, Participant, Success, consumer_config
from sagaflow_participant import producer_config as make_producer_config
from sagaflow_participant.kafka import Runner


def test_consumer_config() -> None:
    c = consumer_config("broker:9092", "payments")
    assert c["bootstrap.servers"] == "broker:9092"
    assert c["group.id"] == "payments"
    assert c["auto.offset.reset"] == "earliest"
    assert c["enable.auto.commit"] is False
    assert c["session.timeout.ms"] == 10000
    assert consumer_config("b", "g", {"session.timeout.ms": 6000})["session.timeout.ms"] == 6000


def test_producer_config() -> None:
    p = make_producer_config("broker:9092")
    assert p["enable.idempotence"] is True
    assert p["acks"] == "all"


class FakeMessage:
    def __init__(self, m: Message) -> None:
        self.m = m

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.m.topic

    def partition(self) -> int:
        return self.m.partition

    def offset(self) -> int:
        return self.m.offset

    def key(self) -> bytes | None:
        return self.m.key

    def value(self) -> bytes | None:
        return self.m.value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.m.headers


class FakeConsumer:
    """Serves queued messages, honours seek by serving the message again; stops when empty."""

    def __init__(self, messages: list[Message], stop: threading.Event, log: list[str]) -> None:
        self.queue, self.stop, self.log = list(messages), stop, log
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.log.append(f"subscribe {','.join(topics)}")

    def poll(self, timeout: float) -> FakeMessage | None:
        if not self.queue:
            self.stop.set()
            return None
        return FakeMessage(self.queue.pop(0))

    def seek(self, tp: TopicPartition) -> None:
        self.log.append(f"seek {tp.offset}")
        self.queue.insert(0, command_message(offset=tp.offset))

    def commit(self, message: FakeMessage, asynchronous: bool) -> None:
        assert asynchronous is False
        self.log.append(f"commit {message.offset()}")

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, log: list[str], fail_first: bool = False) -> None:
        self.log, self.fail_next = log, fail_first
        self.pending: list[Callable[[], None]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        headers: Any,
        on_delivery: Callable[[KafkaError | None, Any], None],
    ) -> None:
        err = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail_next else None
        self.fail_next = False
        self.log.append(f"produce {topic}")
        self.pending.append(lambda: on_delivery(err, None))

    def flush(self, timeout: float) -> int:
        for deliver in self.pending:
            self.log.append("ack")
            deliver()
        self.pending = []
        return 0


def run(
    messages: list[Message],
    handler: Callable[[Command], Success],
    fail_first_delivery: bool = False,
) -> list[str]:
    p = Participant("/inventory")
    p.register("command", "inventory.reserve_stock", handler, success="inventory.stock_reserved")
    stop, log = threading.Event(), []
    consumer = FakeConsumer(messages, stop, log)
    runner = Runner(p._processor, consumer, FakeProducer(log, fail_first_delivery), stop, 0.0)
    runner.run(["inventory.commands"])
    assert consumer.closed
    return log


def test_offset_committed_after_the_reply_is_acknowledged() -> None:
    log = run([command_message(offset=7)], lambda c: Success({"reservation_id": "r"}))
    assert log == ["subscribe inventory.commands", "produce orders.saga-replies", "ack", "commit 7"]


def test_a_raising_handler_rewinds_and_retries() -> None:
    calls: list[int] = []

    def handler(command: Command) -> Success:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return Success({"reservation_id": "r"})

    log = run([command_message(offset=3)], handler)
    assert log[1:] == ["seek 3", "produce orders.saga-replies", "ack", "commit 3"]


def test_an_unacknowledged_reply_is_not_committed() -> None:
    log = run([command_message(offset=5)], lambda c: Success({}), fail_first_delivery=True)
    assert log[1:] == [
        "produce orders.saga-replies",
        "ack",
        "seek 5",
        "produce orders.saga-replies",
        "ack",
        "commit 5",
    ]

"""The client settings, and the poll loop's order: reply acknowledged, then offset committed."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
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
    """Serves queued messages, honours seek by serving the message again; stops when empty.

    ``seek_fails``: seek raises, as when librdkafka refuses it; ``assigned``: what
    ``assignment()`` then reports for partition 0.
    """

    def __init__(
        self,
        messages: list[Message],
        stop: threading.Event,
        log: list[str],
        seek_fails: bool = False,
        assigned: bool = True,
    ) -> None:
        self.queue, self.stop, self.log = list(messages), stop, log
        self.seek_fails, self.assigned = seek_fails, assigned
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
        if self.seek_fails:
            raise KafkaException(KafkaError(KafkaError._STATE))
        self.queue.insert(0, command_message(offset=tp.offset))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("inventory.commands", 0)] if self.assigned else []

    def commit(self, message: FakeMessage, asynchronous: bool) -> None:
        assert asynchronous is False
        self.log.append(f"commit {message.offset()}")

    def close(self) -> None:
        self.log.append("close")
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
    consumers: list[FakeConsumer] | None = None,
    log: list[str] | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """Runs the loop over ``consumers`` (one after another) or one consumer of ``messages``."""
    p = Participant("/inventory")
    p.register("command", "inventory.reserve_stock", handler, success="inventory.stock_reserved")
    stop, log = stop or threading.Event(), [] if log is None else log
    consumers = consumers or [FakeConsumer(messages, stop, log)]
    made = list(consumers)
    producer = FakeProducer(log, fail_first_delivery)
    runner = Runner(p._processor, lambda: made.pop(0), producer, stop, 0.0)
    runner.run(["inventory.commands"])
    assert not made, "every consumer was used"
    assert all(c.closed for c in consumers)
    return log


def failing_first() -> Callable[[Command], Success]:
    """A handler that raises on its first call, then succeeds."""
    calls: list[int] = []

    def handler(command: Command) -> Success:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return Success({"reservation_id": "r"})

    return handler


def test_offset_committed_after_the_reply_is_acknowledged() -> None:
    log = run([command_message(offset=7)], lambda c: Success({"reservation_id": "r"}))
    assert log == [
        "subscribe inventory.commands",
        "produce orders.saga-replies",
        "ack",
        "commit 7",
        "close",
    ]


def test_a_raising_handler_rewinds_and_retries() -> None:
    log = run([command_message(offset=3)], failing_first())
    assert log[1:] == ["seek 3", "produce orders.saga-replies", "ack", "commit 3", "close"]


def test_an_unacknowledged_reply_is_not_committed() -> None:
    log = run([command_message(offset=5)], lambda c: Success({}), fail_first_delivery=True)
    assert log[1:] == [
        "produce orders.saga-replies",
        "ack",
        "seek 5",
        "produce orders.saga-replies",
        "ack",
        "commit 5",
        "close",
    ]


def test_a_failed_seek_on_an_owned_partition_replaces_the_consumer() -> None:
    """Offset 6 must not be committed while 5 is unanswered: the consumer is replaced, and the
    new one (like a real one) starts again from the committed offset, before 5."""
    stop, log = threading.Event(), []
    stuck = FakeConsumer(
        [command_message(offset=5), command_message(offset=6)], stop, log, seek_fails=True
    )
    fresh = FakeConsumer([command_message(offset=5), command_message(offset=6)], stop, log)
    run([], failing_first(), consumers=[stuck, fresh], log=log, stop=stop)
    assert [e for e in log if e.startswith(("seek", "commit", "close"))] == [
        "seek 5",
        "close",
        "commit 5",
        "commit 6",
        "close",
    ]


def test_a_failed_seek_on_a_revoked_partition_goes_on() -> None:
    """The new owner starts at the last commit; this consumer keeps serving what it still owns."""
    stop, log = threading.Event(), []
    other = dataclasses.replace(command_message(offset=9), partition=1)
    consumer = FakeConsumer(
        [command_message(offset=5), other], stop, log, seek_fails=True, assigned=False
    )
    run([], failing_first(), consumers=[consumer], log=log, stop=stop)
    assert [e for e in log if e.startswith(("seek", "commit", "close"))] == [
        "seek 5",
        "commit 9",
        "close",
    ]

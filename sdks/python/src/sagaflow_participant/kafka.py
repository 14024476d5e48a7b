"""The Kafka side: client settings and the poll loop around the processor.

confluent-kafka is synchronous, so the loop is a plain blocking one: one message at a time,
reply produced and acknowledged, then its offset committed (protocol/README.md, "Consume safely").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from .model import Message, Record
from .processor import Processor

log = logging.getLogger(__name__)

_UNKNOWN_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}


def consumer_config(
    bootstrap_servers: str, group_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The consumer settings the library relies on; ``overrides`` win (use with care)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        # A new group must read the commands sent before it first joined.
        "auto.offset.reset": "earliest",
        # Offsets are committed by hand, after the reply is acknowledged.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A dead replica's partitions move on quickly; its commands wait against their timeout.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        # Topics subscribed before they exist are picked up within seconds, not 5 minutes.
        "topic.metadata.refresh.interval.ms": 5000,
        "error_cb": _log_client_error,
    }
    return config | (overrides or {})


def producer_config(
    bootstrap_servers: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Idempotent producer with ``acks=all``: a retried send neither duplicates nor reorders."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0,  # one reply at a time, each awaited: batching would only add latency
        "error_cb": _log_client_error,
    }
    return config | (overrides or {})


class DeliveryError(Exception):
    """The broker did not acknowledge a record."""


class _ReplaceConsumer(Exception):
    """The consumer must be closed and replaced: it owns a partition it could not rewind."""


class Runner:
    """Polls, processes, produces, commits; stops after the message in hand."""

    def __init__(
        self,
        processor: Processor,
        new_consumer: Callable[[], Consumer],
        producer: Producer,
        stop: threading.Event,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self._processor = processor
        self._new_consumer = new_consumer
        self._producer = producer
        self._stop = stop
        self._backoff = retry_backoff_s
        self._last_logged: dict[str, float] = {}

    def run(self, topics: list[str]) -> None:
        try:
            while not self._stop.is_set():
                if self._consume(topics):
                    self._stop.wait(self._backoff)
        finally:
            log.info("stopping: flushing the producer")
            self._producer.flush(10)

    def _consume(self, topics: list[str]) -> bool:
        """One consumer's life, until stop (False) or until it must be replaced (True)."""
        self._consumer = self._new_consumer()
        try:
            # Subscribing to topics that do not exist yet is fine: they are polled for.
            self._consumer.subscribe(topics)
            while not self._stop.is_set():
                msg = self._consumer.poll(0.5)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    self._log_poll_error(error)
                elif self._handle(msg):
                    self._commit(msg)
            return False
        except _ReplaceConsumer as e:
            log.warning("%s: replacing the consumer (it resumes from the committed offsets)", e)
            return True
        finally:
            log.info("closing the consumer: leaving the group")
            self._consumer.close()

    def _handle(self, msg: KafkaMessage) -> bool:
        """Processes and answers ``msg``; False when it must be tried again."""
        try:
            record = self._processor.process(to_message(msg))
            if record is not None:
                self._send(record)
            return True
        except Exception:
            log.exception(
                "%s[%d]@%d failed; retrying in %.1fs",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                self._backoff,
            )
            self._rewind(msg)
            self._stop.wait(self._backoff)
            return False

    def _rewind(self, msg: KafkaMessage) -> None:
        """Reads ``msg`` again next: its partition must not move past it."""
        try:
            self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
            return
        except KafkaException as e:
            failure = f"seek back to {msg.topic()}[{msg.partition()}]@{msg.offset()} failed: {e}"
        if self._still_owned(msg):
            # Consuming on would commit a later offset past this unanswered message. A new
            # consumer starts from the committed offset, which is at or before it.
            raise _ReplaceConsumer(failure)
        # The partition was taken away meanwhile: its new owner starts at the last commit.
        log.warning("%s (the partition is no longer assigned)", failure)

    def _still_owned(self, msg: KafkaMessage) -> bool:
        try:
            assigned = self._consumer.assignment()
        except KafkaException:
            return True  # unknown: assume owned, the safe side
        return any(tp.topic == msg.topic() and tp.partition == msg.partition() for tp in assigned)

    def _send(self, record: Record) -> None:
        results: list[KafkaError | None] = []
        self._producer.produce(
            record.topic,
            value=record.value,
            key=record.key,
            headers=record.headers,
            on_delivery=lambda err, _msg: results.append(err),
        )
        # Wait for the acknowledgement, however long: the offset must not pass an unsent reply.
        while not results:
            self._producer.flush(1.0)
        if results[0] is not None:
            raise DeliveryError(f"{record.kind} to {record.topic}: {results[0]}")

    def _commit(self, msg: KafkaMessage) -> None:
        try:
            self._consumer.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            # Typically a rebalance took the partition: its new owner reads the message again
            # and answers it from the store.
            log.warning(
                "commit of %s[%d]@%d failed: %s", msg.topic(), msg.partition(), msg.offset(), e
            )

    def _log_poll_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        level = logging.WARNING
        if error.code() in _UNKNOWN_TOPIC:
            # Repeats on every metadata refresh until the topic is created: say it now and then.
            now = time.monotonic()
            if now - self._last_logged.get(error.str(), -60.0) < 60.0:
                level = logging.DEBUG
            else:
                self._last_logged[error.str()] = now
        log.log(level, "consumer: %s (polling goes on)", error.str())


def to_message(msg: KafkaMessage) -> Message:
    return Message(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or []),
    )


def _log_client_error(error: KafkaError) -> None:
    log.warning("kafka client: %s", error.str())

"""The public face: register one handler per command or compensation type, then ``run``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, Producer

from .kafka import Runner, consumer_config, producer_config
from .model import Handler, Message, Phase, Record, Registration
from .processor import Processor
from .store import MemoryStore, Store


class Participant:
    """A sagaflow participant service: its handlers, its store, its Kafka loop.

    ``source`` is the ``ce_source`` of its replies; ``store`` defaults to a ``MemoryStore``.
    """

    def __init__(
        self,
        source: str,
        *,
        store: Store | None = None,
        dead_letter_topic: str = "participants.dead-letter",
    ) -> None:
        self._processor = Processor(source, dead_letter_topic, store or MemoryStore())
        self._stop = threading.Event()

    def register(
        self,
        phase: Phase,
        type: str,
        handler: Handler,
        *,
        success: str,
        refusal: str | None = None,
    ) -> None:
        """Registers ``handler`` for ``type`` in ``phase``.

        ``success`` is its success reply type; ``refusal`` (commands only) is the failure type
        sent when the command arrives after its step was compensated (None: no reply then).
        """
        self._processor.register(Registration(phase, type, success, handler, refusal))

    def command(
        self, type: str, *, success: str, refusal: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register("command", …)``."""

        def decorate(handler: Handler) -> Handler:
            self.register("command", type, handler, success=success, refusal=refusal)
            return handler

        return decorate

    def compensation(self, type: str, *, success: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``register("compensation", …)``."""

        def decorate(handler: Handler) -> Handler:
            self.register("compensation", type, handler, success=success)
            return handler

        return decorate

    def process(self, message: Message) -> Record | None:
        """The record to produce for one message (no Kafka involved): for tests and custom loops."""
        return self._processor.process(message)

    def run(
        self,
        bootstrap_servers: str,
        group_id: str,
        topics: Iterable[str],
        *,
        consumer_overrides: dict[str, Any] | None = None,
        producer_overrides: dict[str, Any] | None = None,
        retry_backoff_s: float = 1.0,
    ) -> None:
        """Consumes ``topics`` until ``stop()``; then finishes the message in hand, commits,
        leaves the group and flushes the producer."""
        config = consumer_config(bootstrap_servers, group_id, consumer_overrides)
        producer = Producer(producer_config(bootstrap_servers, producer_overrides))
        # A factory: the runner replaces its consumer when it cannot rewind a partition it owns.
        runner = Runner(
            self._processor, lambda: Consumer(config), producer, self._stop, retry_backoff_s
        )
        runner.run(list(topics))

    def stop(self) -> None:
        """Asks ``run`` to return; safe from a signal handler or another thread."""
        self._stop.set()

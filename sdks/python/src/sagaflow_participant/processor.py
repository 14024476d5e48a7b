"""The pure part of a participant: from "a message was read" to "produce this record".

No Kafka here; the runner (``kafka.py``) feeds messages in and produces what comes out, and the
shared test vectors drive this module directly.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

from . import replies
from .envelope import DecodeError, Envelope, decode
from .model import (
    REFUSAL_PAYLOAD,
    Command,
    Failure,
    Message,
    Outcome,
    Record,
    Registration,
    Success,
)
from .store import Store, StoreSession
from .tracing import consumer_span

log = logging.getLogger(__name__)


class Processor:
    """Decodes, dead-letters, decides (under the store's lock) and builds the reply."""

    def __init__(self, source: str, dead_letter_topic: str, store: Store) -> None:
        self.source = source
        self.dead_letter_topic = dead_letter_topic
        self.store = store
        self.registrations: dict[tuple[str, str], Registration] = {}

    def register(self, registration: Registration) -> None:
        key = (registration.phase, registration.type)
        if key in self.registrations:
            raise ValueError(f"a {registration.phase} handler for `{registration.type}` exists")
        if registration.phase == "compensation" and registration.refusal is not None:
            raise ValueError("only commands have a refusal type")
        self.registrations[key] = registration

    def process(self, message: Message) -> Record | None:
        """The record to produce for ``message``, or None to skip it.

        Raises whatever a handler raises, after the store rolled back: the caller retries the
        same message later.
        """
        try:
            envelope = decode(message)
        except DecodeError as e:
            with consumer_span(message.topic, None, None):
                return self._dead_letter(message, str(e))
        command = envelope.command
        with consumer_span(message.topic, envelope.traceparent, envelope.tracestate) as parent:
            registration = self.registrations.get((command.phase, command.type))
            if registration is None:
                return self._dead_letter(message, f"unknown {command.phase} type `{command.type}`")
            outcome = self._decide(envelope, registration)
            if outcome is None:
                log.info(
                    "skipping %s %s: compensated before it ran, no refusal type",
                    command.type,
                    command.id,
                )
                return None
            return replies.reply(envelope, outcome, self.source, parent)

    def _dead_letter(self, message: Message, reason: str) -> Record:
        log.warning(
            "dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
        )
        return replies.dead_letter(message, self.dead_letter_topic, reason)

    def _decide(self, envelope: Envelope, registration: Registration) -> Outcome | None:
        command = envelope.command
        saga_id = str(uuid.UUID(command.saga_id))  # one spelling for the lock and the row
        with self.store.session(saga_id, command.step) as session:
            stored = session.get(command.phase)
            if stored is not None and (not stored.retryable or stored.command_id == command.id):
                return stored  # a repeat, or a settled outcome: never run twice
            # Nothing stored, or a retryable failure answering another ce_id: a new attempt
            # is evaluated afresh, which includes the refusal after a compensation.
            if command.phase == "command":
                outcome = self._command(command, registration, session)
            else:
                outcome = self._compensation(command, registration, session)
            if outcome is not None:
                session.put(command.phase, outcome)
            return outcome

    def _command(
        self, command: Command, registration: Registration, session: StoreSession
    ) -> Outcome | None:
        if session.get("compensation") is not None:
            if registration.refusal is None:
                return None
            return Outcome(command.id, registration.refusal, REFUSAL_PAYLOAD, False)
        return self._call(command, registration, session)

    def _compensation(
        self, command: Command, registration: Registration, session: StoreSession
    ) -> Outcome:
        done = session.get("command")
        if done is None or not self._is_success(done):
            return Outcome(command.id, registration.success, {}, False)  # nothing to undo
        return self._call(command, registration, session)

    def _is_success(self, outcome: Outcome) -> bool:
        # The table keeps the reply type only: a success is a type some command handler
        # registered as its success (failure and refusal types never are).
        return any(
            r.phase == "command" and r.success == outcome.reply_type
            for r in self.registrations.values()
        )

    def _call(self, command: Command, registration: Registration, session: StoreSession) -> Outcome:
        bound = dataclasses.replace(command, transaction=session.transaction)
        result = registration.handler(bound)
        if isinstance(result, Success):
            return Outcome(command.id, registration.success, result.payload, False)
        if isinstance(result, Failure):
            return Outcome(command.id, result.type, result.payload, result.retryable)
        raise TypeError(f"handler for `{command.type}` returned {result!r}, not Success/Failure")

"""The values a participant deals in: messages in and out, commands, handler results, outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["command", "compensation"]
PHASES: tuple[Phase, ...] = ("command", "compensation")

#: The body of a refusal: a command that arrives after its step was compensated.
REFUSAL_PAYLOAD: dict[str, str] = {"error": "the step was compensated before it ran"}


@dataclass(frozen=True)
class Message:
    """A record as read from Kafka; header values are raw bytes (``None`` for a null header)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Record:
    """A record to produce: a reply (``kind="reply"``) or a dead-letter copy."""

    kind: Literal["reply", "dead_letter"]
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Command:
    """A decoded command or compensation, as a handler receives it."""

    id: str
    type: str
    source: str
    saga_id: str
    definition: str | None
    step: str
    attempt: int
    phase: Phase
    reply_to: str
    token: str
    payload: Any
    headers: list[tuple[str, bytes | None]]
    #: The store's open transaction (a psycopg ``Connection`` for PostgresStore, ``None``
    #: in memory): writes made through it commit or roll back with the stored outcome.
    transaction: Any = None


@dataclass(frozen=True)
class Success:
    """The handler did the work; the reply has the registration's success type."""

    payload: Any = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """The handler did nothing; ``retryable`` must match the step's definition of ``type``."""

    type: str
    payload: Any = field(default_factory=dict)
    retryable: bool = False


Result = Success | Failure
Handler = Callable[[Command], Result]


@dataclass(frozen=True)
class Registration:
    """One handler for one (phase, type)."""

    phase: Phase
    type: str
    success: str
    handler: Handler
    refusal: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a store keeps per (saga id, step, phase): the answer given and to which ``ce_id``."""

    command_id: str
    reply_type: str
    payload: Any
    retryable: bool

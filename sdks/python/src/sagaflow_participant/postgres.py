"""The PostgreSQL store: one row per (saga id, step, phase) in ``sagaflow_participant_outcomes``,
the table every sagaflow participant library shares (protocol/README.md, "Stores")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .model import Outcome, Phase
from .store import StoreSession

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS sagaflow_participant_outcomes (
    saga_id     uuid        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('command', 'compensation')),
    command_id  text        NOT NULL,
    reply_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    retryable   boolean     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step, phase)
)"""
# Two services creating the table at once can collide in the catalogue: serialise them.
_CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('sagaflow_participant_outcomes', 0))"
# The same key in all four libraries, so a command and a compensation of one step never
# run at once even when handled by services written in different languages.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s::uuid::text || '/' || %s, 0))"
_SELECT = """SELECT phase, command_id, reply_type, payload, retryable
FROM sagaflow_participant_outcomes WHERE saga_id = %s AND step = %s"""
_UPSERT = """INSERT INTO sagaflow_participant_outcomes
    (saga_id, step, phase, command_id, reply_type, payload, retryable)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (saga_id, step, phase) DO UPDATE SET
    command_id = EXCLUDED.command_id, reply_type = EXCLUDED.reply_type,
    payload = EXCLUDED.payload, retryable = EXCLUDED.retryable, recorded_at = now()"""


class _PostgresSession:
    def __init__(self, conn: psycopg.Connection[Any], saga_id: str, step: str):
        self.transaction: Any = conn
        self._key = (saga_id, step)
        self._outcomes: dict[str, Outcome] = {}
        for phase, command_id, reply_type, payload, retryable in conn.execute(_SELECT, self._key):
            self._outcomes[phase] = Outcome(command_id, reply_type, payload, retryable)

    def get(self, phase: Phase) -> Outcome | None:
        return self._outcomes.get(phase)

    def put(self, phase: Phase, outcome: Outcome) -> None:
        row = (outcome.command_id, outcome.reply_type, Jsonb(outcome.payload), outcome.retryable)
        self.transaction.execute(_UPSERT, (*self._key, phase, *row))
        self._outcomes[phase] = outcome


class PostgresStore:
    """Outcomes in PostgreSQL; the table is created when missing.

    Connections are opened on demand and up to ``max_idle`` are kept for reuse, so the store
    may be shared by threads (each session holds its own connection).
    """

    def __init__(self, conninfo: str, *, max_idle: int = 4) -> None:
        self._conninfo = conninfo
        self._max_idle = max_idle
        self._idle: list[psycopg.Connection[Any]] = []
        self._guard = threading.Lock()
        with self._connection() as conn, conn.transaction():
            conn.execute(_CREATE_LOCK)
            conn.execute(CREATE_TABLE)

    @contextmanager
    def session(self, saga_id: str, step: str) -> Iterator[StoreSession]:
        with self._connection() as conn, conn.transaction():
            conn.execute(_LOCK, (saga_id, step))
            yield _PostgresSession(conn, saga_id, step)

    def close(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._guard:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            # autocommit: transactions are the explicit conn.transaction() blocks only.
            conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        with self._guard:
            if not conn.closed and not conn.broken and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

"""Where outcomes are kept: the store interface and the in-memory store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from .model import Outcome, Phase


class StoreSession(Protocol):
    """One (saga id, step) held under the store's lock, inside one transaction."""

    #: Handed to handlers as ``Command.transaction`` (None when the store has none).
    transaction: Any

    def get(self, phase: Phase) -> Outcome | None: ...

    def put(self, phase: Phase, outcome: Outcome) -> None: ...


class Store(Protocol):
    def session(self, saga_id: str, step: str) -> AbstractContextManager[StoreSession]:
        """Locks (saga id, step) and opens a transaction; commits when the block exits normally,
        rolls back when it raises."""
        ...


class _MemorySession:
    transaction: Any = None

    def __init__(self, saved: dict[tuple[str, str, Phase], Outcome], saga_id: str, step: str):
        self._saved = saved
        self._key = (saga_id, step)
        self.pending: dict[tuple[str, str, Phase], Outcome] = {}

    def get(self, phase: Phase) -> Outcome | None:
        key = (*self._key, phase)
        return self.pending.get(key, self._saved.get(key))

    def put(self, phase: Phase, outcome: Outcome) -> None:
        self.pending[(*self._key, phase)] = outcome


class MemoryStore:
    """Outcomes in a dict, for tests and demos: a restart forgets them."""

    def __init__(self) -> None:
        self._saved: dict[tuple[str, str, Phase], Outcome] = {}
        self._guard = threading.Lock()
        # One lock per (saga, step), kept for the store's life: small, and a demo store.
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def session(self, saga_id: str, step: str) -> Iterator[StoreSession]:
        with self._guard:
            lock = self._locks.setdefault((saga_id, step), threading.Lock())
        with lock:
            session = _MemorySession(self._saved, saga_id, step)
            yield session
            # Reached only when the block did not raise: the "commit".
            self._saved.update(session.pending)

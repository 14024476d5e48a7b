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


class _KeyLock:
    """A (saga, step) lock and how many sessions hold or wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class MemoryStore:
    """Outcomes in a dict, for tests and demos: every outcome is kept for the store's life (memory
    grows with every saga) and a restart forgets them all."""

    def __init__(self) -> None:
        self._saved: dict[tuple[str, str, Phase], Outcome] = {}
        self._guard = threading.Lock()
        # Only the (saga, step) locks in use: the last session out removes its entry, so the
        # dict does not grow with every saga ever seen.
        self._locks: dict[tuple[str, str], _KeyLock] = {}

    @contextmanager
    def session(self, saga_id: str, step: str) -> Iterator[StoreSession]:
        key = (saga_id, step)
        with self._guard:
            entry = self._locks.setdefault(key, _KeyLock())
            entry.users += 1
        try:
            with entry.lock:
                session = _MemorySession(self._saved, saga_id, step)
                yield session
                # Reached only when the block did not raise: the "commit".
                self._saved.update(session.pending)
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[key]

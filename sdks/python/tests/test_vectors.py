"""Every shared vector, once with the in-memory store and once with the PostgreSQL store."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import VECTORS
from vectors import run_vector

from sagaflow_participant import MemoryStore, PostgresStore


def test_vectors_were_found() -> None:
    assert len(VECTORS) >= 17, VECTORS


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector_memory(path: Path) -> None:
    run_vector(path, MemoryStore())


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector_postgres(path: Path, postgres_store: PostgresStore) -> None:
    run_vector(path, postgres_store)

"""Shared fixtures: the vectors' location and a fresh PostgreSQL database for the store tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sagaflow_participant import PostgresStore

REPO = Path(__file__).resolve().parents[3]
VECTORS = sorted((REPO / "protocol" / "vectors").glob("*.json"))
TEST_DATABASE = "sdk_python_test"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A freshly created database; fails (never skips) when PostgreSQL cannot be reached."""
    admin = os.environ.get(
        "SAGAFLOW_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEST_DATABASE}")
    yield make_conninfo(admin, dbname=TEST_DATABASE)


@pytest.fixture
def postgres_store(database_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE sagaflow_participant_outcomes")
    yield store
    store.close()

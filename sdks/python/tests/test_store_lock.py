"""The store's lock serialises one (saga, step), and a raising handler leaves nothing behind."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from tests_support import SAGA, command_message

from sagaflow_participant import Command, MemoryStore, Outcome, Participant, PostgresStore, Store
from sagaflow_participant import Success as Ok


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return request.getfixturevalue("postgres_store")


def test_lock_serialises_one_saga_step(store: Store) -> None:
    inside, release, second_inside = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with store.session(SAGA, "reserve"):
            inside.set()
            assert release.wait(10)

    def second() -> None:
        with store.session(SAGA, "reserve"):
            second_inside.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    # Another step of the same saga is not held up meanwhile.
    with store.session(SAGA, "authorize"):
        pass
    assert not second_inside.wait(0.3), "a second session of the same step got in"
    release.set()
    assert second_inside.wait(10)
    for t in threads:
        t.join(10)


def test_memory_store_drops_idle_locks() -> None:
    """The per-(saga, step) locks live only while a session holds or waits for them."""
    store = MemoryStore()
    inside, release, waiting = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with store.session(SAGA, "reserve"):
            inside.set()
            assert release.wait(10)

    def waiter() -> None:
        waiting.set()
        with store.session(SAGA, "reserve"):
            pass

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    assert waiting.wait(10)
    deadline = time.monotonic() + 10
    while store._locks[(SAGA, "reserve")].users < 2:  # the waiter has queued on the lock
        assert time.monotonic() < deadline, "the second session never queued"
        time.sleep(0.001)
    release.set()
    for t in threads:
        t.join(10)
    with pytest.raises(RuntimeError), store.session(SAGA, "authorize"):
        raise RuntimeError("handler failed")
    for step in ("a", "b", "c"):
        with store.session(f"saga-{step}", step):
            pass
    assert store._locks == {}


def test_outcome_is_kept_only_when_the_session_completes(store: Store) -> None:
    outcome = Outcome("c-1", "payments.authorized", {"authorization_id": "a"}, False)
    with pytest.raises(RuntimeError), store.session(SAGA, "authorize") as session:
        session.put("command", outcome)
        raise RuntimeError("handler failed")
    with store.session(SAGA, "authorize") as session:
        assert session.get("command") is None
        session.put("command", outcome)
    with store.session(SAGA, "authorize") as session:
        assert session.get("command") == outcome
        assert session.get("compensation") is None


def test_handler_writes_share_the_outcome_transaction(postgres_store: PostgresStore) -> None:
    """A handler that raises after writing through Command.transaction leaves no row."""
    with postgres_store.session(SAGA, "setup") as session:
        session.transaction.execute("CREATE TABLE IF NOT EXISTS t_writes (v text)")
        session.transaction.execute("TRUNCATE t_writes")
    calls: list[str] = []

    def handler(command: Command) -> Ok:
        command.transaction.execute("INSERT INTO t_writes VALUES (%s)", (command.id,))
        calls.append(command.id)
        if len(calls) == 1:
            raise RuntimeError("crash after writing")
        return Ok({"reservation_id": "r"})

    p = Participant("/inventory", store=postgres_store)
    p.register("command", "inventory.reserve_stock", handler, success="inventory.stock_reserved")
    with pytest.raises(RuntimeError):
        p.process(command_message())
    record = p.process(command_message())
    assert record is not None and record.kind == "reply"
    with postgres_store.session(SAGA, "setup") as session:
        rows = session.transaction.execute("SELECT v FROM t_writes").fetchall()
    assert [r[0] for r in rows] == [calls[1]], "the first attempt's write was rolled back"


def test_unreachable_database_raises() -> None:
    with pytest.raises(psycopg.OperationalError):
        PostgresStore("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2")

"""PostgreSQL specifics: the gap-free global log, an unreachable server, schema handling."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Sequence

import psycopg
import pytest

import tidings
from tidings.adapters.postgres import PostgresDatabase
from tidings.adapters.sql import SCHEMA_PARTS
from tidings.ports import Transaction
from tidings.records import EventRecord
from tidings.testing.contract import Counted, Counter

pytestmark = pytest.mark.postgres


class SlowCommit:
    """An extra writer that holds each transaction open a random while after its insert,
    and rolls back one in ten: commits then land out of position order, with holes."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        with self.lock:
            delay, fail = self.random.uniform(0, 0.02), self.random.random() < 0.1
        time.sleep(delay)
        if fail:
            raise RuntimeError("rolled back on purpose")


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_a_tailing_reader_sees_every_event_once_in_order_with_eight_writers(
    pg_url: str, schema: str, seed: int
) -> None:
    """Eight writers commit out of position order (and some roll back) while a reader tails
    the log: it reads every committed event exactly once, positions ascending."""
    store = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry([Counted]))
    store.writers.append(SlowCommit(seed))
    committed: dict[str, int] = {}
    commit_order: list[int] = []
    lock = threading.Lock()
    writers_done = threading.Event()

    def writer(n: int) -> None:
        for i in range(40):
            counter = Counter(f"w{n}-{i}")
            for step in range(1 + i % 3):
                counter.increment(step)
            try:
                with store.unit_of_work() as uow:
                    uow.track(counter)
            except RuntimeError:
                continue
            with lock:
                for event in uow.published:
                    committed[event.event_id] = 0
                commit_order.append(max(r.position for r in store.events.read_stream(counter.id)))

    seen: list[EventRecord] = []

    def reader() -> None:
        checkpoint = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page = store.events.read_all(checkpoint, 50)
            seen.extend(page)
            if page:
                checkpoint = page[-1].position
            elif writers_done.is_set() and len(seen) >= len(committed):
                return
            else:
                time.sleep(0.001)

    tail = threading.Thread(target=reader)
    tail.start()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writers_done.set()
    tail.join()
    store.close()

    positions = [r.position for r in seen]
    assert positions == sorted(set(positions)), "the reader saw a position twice or out of order"
    assert sorted(r.event_id for r in seen) == sorted(committed)
    # The hazard really happened: some transaction committed after one with a later position.
    assert any(a > b for a, b in itertools.pairwise(commit_order))


def test_a_hole_left_by_a_rollback_is_passed_once_its_writer_ended(
    pg_url: str, schema: str
) -> None:
    """A rolled-back writer leaves a permanent hole; the reader waits while the writer runs,
    then reads past the hole."""
    store = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry([Counted]))
    holding = threading.Event()
    release = threading.Event()

    class Hold:
        def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
            if records[0].stream_id == "held":
                holding.set()
                release.wait(10)
                raise RuntimeError("abandon the held transaction")

    store.writers.append(Hold())
    held = Counter("held")
    held.increment()

    def hold() -> None:
        with pytest.raises(RuntimeError), store.unit_of_work() as uow:
            uow.track(held)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    later = Counter("later")
    later.increment()
    with store.unit_of_work() as uow:
        uow.track(later)
    assert store.events.read_all() == []  # position 1 may still commit: do not pass it
    release.set()
    holder.join()
    # Passing the hole also waits for every transaction older than its bound, on the whole
    # cluster: another client's long transaction may still be running, so wait for it.
    deadline = time.monotonic() + 30
    while not (records := store.events.read_all()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.stream_id for r in records] == ["later"]
    store.close()


def test_an_unreachable_server_says_how_to_start_it() -> None:
    """Nothing listens on the port: ServerUnavailableError with the start command."""
    with pytest.raises(tidings.ServerUnavailableError, match="pg_ctlcluster"):
        PostgresDatabase("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)


def test_schema_creation_is_idempotent_and_safe_when_processes_race(
    pg_url: str, schema: str
) -> None:
    """Four connects at once on a new schema all succeed and leave one version row."""
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            tidings.connect(pg_url, schema=schema, prefix="shop_").close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT component, version FROM {schema}.shop_schema_version")
        assert sorted(rows.fetchall()) == sorted((p.name, p.version) for p in SCHEMA_PARTS)
        conn.execute(f"UPDATE {schema}.shop_schema_version SET version = 99")
        conn.commit()
    with pytest.raises(tidings.ConfigurationError, match="version 99.*upgrade tidings"):
        tidings.connect(pg_url, schema=schema, prefix="shop_")


def test_the_url_in_messages_never_shows_the_password(pg_url: str, schema: str) -> None:
    """describe() names user, host, port, database and schema, and leaves the password out."""
    url = pg_url.replace("postgres@", "postgres:s3cret@")
    with tidings.connect(url, schema=schema) as store:
        text = store.database.describe()
    assert "s3cret" not in text
    assert text.startswith("PostgreSQL postgres@127.0.0.1:5432/tidings_test_")
    assert text.endswith(f", schema {schema}")


@pytest.fixture
def database(pg_url: str, schema: str) -> object:
    """A PostgresDatabase with one pooled connection (every block gets the same one back)
    and a table ``notes`` in the test's schema, whose ids are checked at commit."""
    db = PostgresDatabase(pg_url, schema=schema, pool_max=1)
    with db.transaction() as tx:
        tx.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        tx.execute(f"CREATE TABLE {schema}.notes (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    yield db
    db.close()


def notes(db: PostgresDatabase, schema: str) -> list[int]:
    """The ids in the notes table, committed."""
    return [row[0] for row in db.query(f"SELECT id FROM {schema}.notes ORDER BY id")]


def test_a_savepoint_opening_a_transaction_does_not_commit_it_early(
    database: PostgresDatabase, schema: str
) -> None:
    """A savepoint that is the first thing a transaction does stays inside it: when a later
    statement fails, the savepoint's write is rolled back with the rest."""
    with pytest.raises(RuntimeError), database.transaction() as tx:
        with tx.savepoint():
            tx.execute(f"INSERT INTO {schema}.notes VALUES (1)")
        tx.execute(f"INSERT INTO {schema}.notes VALUES (2)")
        raise RuntimeError("after the savepoint")
    assert notes(database, schema) == []
    with database.transaction() as tx:
        with tx.savepoint():
            tx.execute(f"INSERT INTO {schema}.notes VALUES (3)")
        with pytest.raises(tidings.StorageError), tx.savepoint():
            tx.execute(f"INSERT INTO {schema}.notes VALUES (4)")  # undone by its savepoint
            tx.execute("SELECT 1 / 0")
    assert notes(database, schema) == [3]


def test_a_connection_goes_back_to_the_pool_in_autocommit_after_every_outcome(
    database: PostgresDatabase, schema: str
) -> None:
    """After a commit, a rollback, a statement error and a failed commit (a deferred
    constraint), the pool's connection is idle and in autocommit again: a read through it
    leaves no transaction open, and the failed commit wrote nothing."""

    def check() -> None:
        with database.connection() as conn:
            assert conn.autocommit
            conn.execute("SELECT 1")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    with database.transaction() as tx:
        tx.execute(f"INSERT INTO {schema}.notes VALUES (1)")
    check()
    with pytest.raises(RuntimeError), database.transaction() as tx:
        tx.execute(f"INSERT INTO {schema}.notes VALUES (2)")
        raise RuntimeError("roll back")
    check()
    with pytest.raises(tidings.StorageError), database.transaction() as tx:
        tx.execute("SELECT * FROM no_such_table")
    check()
    with (
        pytest.raises(tidings.StorageError, match="refused the write"),
        database.transaction() as tx,
    ):
        tx.execute(f"INSERT INTO {schema}.notes VALUES (4), (4)")  # checked at COMMIT
    check()
    assert notes(database, schema) == [1]


def test_a_connection_killed_mid_transaction_is_replaced_and_the_next_write_works(
    database: PostgresDatabase, schema: str, pg_url: str
) -> None:
    """The server ends the session during a write transaction: the write fails as a
    StorageError and leaves nothing, the broken connection is not handed out again, and
    the next transaction (on a fresh connection, in autocommit between writes) commits."""
    with pytest.raises(tidings.StorageError), database.transaction() as tx:
        tx.execute(f"INSERT INTO {schema}.notes VALUES (1)")
        pid = tx.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(pg_url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        tx.execute(f"INSERT INTO {schema}.notes VALUES (2)")
    with database.transaction() as tx:
        assert tx.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
        tx.execute(f"INSERT INTO {schema}.notes VALUES (3)")
    with database.connection() as conn:
        assert conn.autocommit
    assert notes(database, schema) == [3]

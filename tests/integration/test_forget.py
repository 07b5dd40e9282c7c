"""Forgetting on disk: after ``forget`` neither the plaintext nor the key is left in the
SQLite files or in any PostgreSQL table of the store, and the aggregate still loads."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

import tidings
from tidings.domain.personal import REDACTED
from tidings.testing.customer import Customer, Referred, Registered
from tidings.testing.personal_data import EMAIL, FRIEND, NAME

SECRETS = (EMAIL.encode(), NAME.encode(), FRIEND.encode())


def save_customer(store: tidings.Store) -> tuple[Customer, bytes]:
    """A customer with a snapshot and outbox rows; returns it and its key."""
    customers = store.repository(Customer, snapshot_every=2)
    customer = Customer("c-ada")
    customer.register(EMAIL, NAME)
    customer.refer("f-grace", FRIEND)
    with store.unit_of_work() as uow:
        customers.save(uow, customer)
    assert store.keys is not None
    key = store.keys.find(customer.id)
    assert key is not None
    return customer, key.key


def sqlite_bytes(db: Path) -> bytes:
    """Everything in the database file and its -wal and -shm files, as raw bytes."""
    parts = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(path.read_bytes() for path in parts if path.exists())


def test_sqlite_files_hold_no_plaintext_and_after_forget_no_key(tmp_path: Path) -> None:
    """Events, snapshot and outbox rows are sealed; forget overwrites the key in the file
    and empties the WAL, so its bytes are nowhere; the customer loads with markers.

    secure_delete is turned off first (some SQLite builds have it on by default): forget
    turns it on for its delete, and back to what it was after."""
    db = tmp_path / "shop.db"
    registry = tidings.EventRegistry([Registered, Referred])
    with tidings.connect(f"sqlite:///{db}", registry=registry, outbox=True) as store:
        customer, key = save_customer(store)
        connection = store.database.connection()  # type: ignore[attr-defined]
        connection.execute("PRAGMA secure_delete = 0")
        before = sqlite_bytes(db)
        assert key in before  # the check below can fail: the key was there
        assert not [s for s in SECRETS if s in before]
        assert store.forget(customer.id)
        assert connection.execute("PRAGMA secure_delete").fetchone() == (0,)
        after = sqlite_bytes(db)
        assert key not in after
        assert not [s for s in SECRETS if s in after]
        loaded = store.repository(Customer).get(customer.id)
        assert (loaded.email, loaded.tier, loaded.version) == (REDACTED, "gold", 2)
        assert [
            e.friend_name for e in store.read_stream(customer.id) if isinstance(e, Referred)
        ] == [FRIEND]


def postgres_rows(url: str, schema: str) -> str:
    """Every row of every table in ``schema``, as text."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
        assert len(tables) >= 10  # events, snapshots, outbox, inbox, keys, ...
        return "\n".join(
            str(row[0])
            for (table,) in tables
            for row in conn.execute(f"SELECT t::text FROM {schema}.{table} t").fetchall()
        )


@pytest.mark.postgres
def test_postgres_tables_hold_no_plaintext_and_after_forget_no_key(pg_url: str) -> None:
    """No table of the store holds a secret; after forget none holds the key either."""
    schema = "t_forget"
    registry = tidings.EventRegistry([Registered, Referred])
    store = tidings.connect(pg_url, registry=registry, schema=schema, outbox=True)
    try:
        customer, key = save_customer(store)
        before = postgres_rows(pg_url, schema)
        assert key.hex() in before  # bytea reads as hex: the check below can fail
        assert not [s for s in SECRETS if s.decode() in before]
        assert store.forget(customer.id)
        after = postgres_rows(pg_url, schema)
        assert key.hex() not in after
        assert not [s for s in SECRETS if s.decode() in after]
        loaded = store.repository(Customer).get(customer.id)
        assert (loaded.email, loaded.tier, loaded.version) == (REDACTED, "gold", 2)
    finally:
        store.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

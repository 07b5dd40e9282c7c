"""The relay's own records commit without waiting for the disk, and nothing else does.

A relay's marks (published, retry, dead letter) may be lost in a crash without losing an
event: the event only goes out again. So the outbox adapters commit them without the
flush the unit of work's own commits wait for, and must leave the durability of every
other transaction as it was, also when the bookkeeping transaction fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import MakeStore
from tidings.serialization.registry import EventRegistry
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, new_id


def durability(store: Any, tx: Any) -> str:
    """The setting that decides whether a commit waits for the disk, read inside ``tx``."""
    if store.database.dialect == "sqlite":
        return str(tx.execute("PRAGMA synchronous").fetchone()[0])
    return str(tx.execute("SHOW synchronous_commit").fetchone()[0])


LIGHT = {"sqlite": "1", "postgresql": "off"}  # NORMAL (1) on SQLite
FULL = {"sqlite": "2", "postgresql": "on"}  # FULL (2) on SQLite


def test_bookkeeping_commits_lightly_and_the_next_unit_of_work_is_durable_again(
    make_sql_store: MakeStore,
) -> None:
    """Inside the relay's bookkeeping the flush is off; a unit of work afterwards on the same
    thread (the same SQLite connection, a pooled PostgreSQL one) has it on again."""
    store = make_sql_store(EventRegistry([Counted]), outbox=True)
    dialect = store.database.dialect
    with store.outbox._bookkeeping() as tx:  # type: ignore[union-attr]
        assert durability(store, tx) == LIGHT[dialect]
    with store.database.transaction() as tx:
        assert durability(store, tx) == FULL[dialect]


def test_a_failed_bookkeeping_transaction_also_leaves_the_durability_as_it_was(
    make_sql_store: MakeStore,
) -> None:
    """An error inside the block rolls it back and still restores the setting."""
    store = make_sql_store(EventRegistry([Counted]), outbox=True)
    with pytest.raises(RuntimeError), store.outbox._bookkeeping():  # type: ignore[union-attr]
        raise RuntimeError("a settle that failed half-way")
    with store.database.transaction() as tx:
        assert durability(store, tx) == FULL[store.database.dialect]


def test_settling_a_batch_through_the_light_path_marks_it_published(
    make_sql_store: MakeStore,
) -> None:
    """The relay's settle goes through bookkeeping and its marks are there afterwards: a
    second pass finds nothing to publish and the backlog is empty."""
    store = make_sql_store(EventRegistry([Counted]), outbox=True)
    counter = Counter(new_id())
    counter.increment(2)
    counter.increment(3)
    with store.unit_of_work() as uow:
        uow.track(counter)
    transport = RecordingTransport()
    relay = store.relay(transport)
    assert relay.run_once() == 2
    assert relay.run_once() == 0
    relay.release()
    assert len(transport.ids()) == 2
    assert store.outbox.stats(0.0).backlog == 0  # type: ignore[union-attr]

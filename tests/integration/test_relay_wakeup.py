"""A relay that claimed every due row goes straight to waiting; nothing committed while it
was busy may be missed by that wait.

The relay's loop skips the second claim that used to follow every pass (it found nothing
at a steady flow). That is only safe if a commit made by another process while the relay
published (before it started waiting) still ends the wait at once.
"""

from __future__ import annotations

import time
from typing import Any

import tidings
from tests.conftest import MakeStore
from tidings.serialization.registry import EventRegistry
from tidings.testing.contract import Counted, Counter, new_id

REGISTRY = EventRegistry([Counted])


def second_store(store: Any) -> tidings.Store:
    """Another store on the same database: its own connections, as another process has."""
    db = store.database
    if db.dialect == "sqlite":
        return tidings.connect(f"sqlite:///{db.path}", outbox=True, registry=REGISTRY)
    return tidings.connect(db.url, schema=db.schema, outbox=True, registry=REGISTRY)


def test_a_commit_made_before_the_wait_began_ends_it_at_once(make_sql_store: MakeStore) -> None:
    """After one wait, another store commits an event; the next wait (30 s) returns at once
    (well within 10 s) instead of sleeping through the commit it started after."""
    store = make_sql_store(REGISTRY, outbox=True)
    box = store.outbox
    assert box is not None
    other = second_store(store)
    try:
        box.wait_for_work(0.01)  # the relay's last wait: listening from here on
        counter = Counter(new_id())
        counter.increment()
        with other.unit_of_work() as uow:  # while the relay was busy publishing
            uow.track(counter)
        # On this thread: on SQLite the version is remembered per thread (per connection).
        started = time.monotonic()
        box.wait_for_work(30.0)
        assert time.monotonic() - started < 10.0, "the wait slept through an earlier commit"
    finally:
        other.close()

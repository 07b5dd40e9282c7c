"""Two services for the stream projection tests: A writes counters (outbox + relay), B
keeps a read model of them fed by a broker, through its consumer and inbox."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import tidings
from tests.contract.test_read_your_writes import Watched
from tidings.application.projections import Projection, source_token
from tidings.ports import Subscription, Transport
from tidings.testing.contract import Counted, Counter

SOURCE = "counters"
# The current test's read-model table: PostgreSQL tests share a database.
TABLE = ["counter_totals"]


def new_table() -> None:
    """Give the next read model a table no other test uses."""
    TABLE[0] = f"totals_{uuid.uuid4().hex[:10]}"


def totals_projection() -> Projection:
    """Per counter: the sum of its steps, and the versions in the order applied."""
    table = TABLE[0]

    def counted(uow: Any, event: Counted) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, total, versions) VALUES (:id, :step, :v)"
            f" ON CONFLICT (id) DO UPDATE SET total = {table}.total + excluded.total,"
            f" versions = {table}.versions || ',' || excluded.versions",
            {"id": event.aggregate_id, "step": event.step, "v": str(event.aggregate_version)},
        )

    return Projection(
        "counter-totals",
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table}"
            " (id TEXT PRIMARY KEY, total INTEGER NOT NULL, versions TEXT NOT NULL)"
        ],
    )


def read_model(store: tidings.Store) -> dict[str, tuple[int, str]]:
    """The read model: counter id -> (total, versions as applied)."""
    with store.unit_of_work() as uow:
        rows = uow.execute(f"SELECT id, total, versions FROM {TABLE[0]}").fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def write(store: tidings.Store, counter: Counter, *steps: int) -> str | None:
    """Service A: record ``steps`` on ``counter`` in one unit of work; its token."""
    for step in steps:
        counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    return source_token(store, uow.position)


def relay_all(store: tidings.Store, transport: Transport) -> int:
    """Service A's relay: publish everything due, then give the lanes back."""
    relay = store.relay(transport, lanes=1)
    try:
        return relay.drain()
    finally:
        relay.release()


def consumer_of(store: tidings.Store, subscription: Subscription, **options: Any) -> Any:
    """Service B's consumer, applying the projection."""
    handlers = store.projection_handlers(totals_projection())
    options.setdefault("fetch_timeout", 0.2)
    return store.consumer(subscription, handlers, **options)


def wait_while_held(
    store: tidings.Store,
    token: str | None,
    projection: str,
    read: Callable[[], object],
    release: Callable[[], None],
) -> dict[str, object]:
    """A reader in ``store`` waits on ``token`` while the consumer is held; once it is
    asleep (it looked and did not find the write), ``release`` runs the consumer. What
    the reader got: the position the wait returned, and ``read()`` right after it."""
    progress = store.projection_progress
    assert isinstance(progress, Watched), "give the store a Watched progress first"
    seen: dict[str, object] = {}

    def reader() -> None:
        seen["position"] = store.wait_for(token, projection, timeout=60.0)
        seen["read"] = read()

    waiter = threading.Thread(target=reader)
    waiter.start()
    try:
        assert progress.sleeping.wait(10.0), "the waiter never went to sleep"
        assert "position" not in seen  # it looked, did not find the write, and waits
    finally:
        release()  # the consumer runs only now
        waiter.join(60.0)
    return seen

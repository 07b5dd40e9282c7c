"""Two services for the stream projection tests: A writes counters (outbox + relay), B
keeps a read model of them fed by a broker, through its consumer and inbox."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import tidings
from tidings.application.projections import Projection, source_token
from tidings.application.projections.waiting import Progress
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


class WaitSeen(Progress):
    """A store's wake-up that says when a waiter has looked and gone to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Event()

    def wait(self, seen: int, timeout: float) -> None:
        """Note the waiter asleep, then sleep as before."""
        self.sleeping.set()
        super().wait(seen, timeout)

"""The reference library, ``eventsourcing`` (9.x), configured like tidings.

SQLite: its own WAL mode, and ``synchronous=FULL`` set on every connection it opens (the
library sets no synchronous mode of its own). PostgreSQL: its psycopg 3 module.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate


class Order(Aggregate):
    """One event to create it, ItemAdded for every line."""

    class Created(Aggregate.Created):
        customer_id: str

    class ItemAdded(Aggregate.Event):
        sku: str
        quantity: int
        unit_price_cents: int

        def apply(self, aggregate: Any) -> None:
            aggregate.quantity += self.quantity

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.quantity = 0

    def add_item(self) -> None:
        """Record one ItemAdded."""
        self.trigger_event(self.ItemAdded, sku="BOOK-42", quantity=2, unit_price_cents=1950)


class Shop(Application[uuid.UUID]):
    """The application that stores Orders."""


def full_sync_sqlite() -> None:
    """Make every SQLite connection eventsourcing opens use synchronous=FULL, like tidings."""
    from eventsourcing.sqlite import SQLiteConnectionPool

    create = SQLiteConnectionPool._create_connection
    if getattr(create, "full_sync", False):
        return

    def with_full_sync(self: Any) -> Any:
        connection = create(self)
        connection._sqlite_conn.execute("PRAGMA synchronous = FULL")
        return connection

    with_full_sync.full_sync = True  # type: ignore[attr-defined]
    SQLiteConnectionPool._create_connection = with_full_sync  # type: ignore[method-assign]


class EventsourcingLibrary:
    """eventsourcing on SQLite or PostgreSQL (``env`` picks which)."""

    name = "eventsourcing"

    def __init__(self, env: dict[str, str]) -> None:
        if env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
            full_sync_sqlite()
        self.app = Shop(env=env)
        self.snapshotting = Shop(env={**env, "IS_SNAPSHOTTING_ENABLED": "y"})

    def one_per_transaction(self, streams: list[str]) -> None:
        """A new Order per stream (one Created event), one save each."""
        for stream in streams:
            self.app.save(Order(stream))

    def many_per_transaction(self, stream: str, count: int) -> uuid.UUID:
        """An Order with ``count`` events, saved at once."""
        order = Order(stream)
        for _ in range(count - 1):
            order.add_item()
        self.app.save(order)
        return order.id

    def load(self, order_id: uuid.UUID) -> int:
        """Replay the Order from its events; returns its version."""
        return int(self.app.repository.get(order_id).version)

    def snapshot(self, order_id: uuid.UUID) -> None:
        """Take a snapshot of the Order at its version."""
        self.snapshotting.take_snapshot(order_id)

    def load_from_snapshot(self, order_id: uuid.UUID) -> int:
        """Load the Order through the snapshotting application."""
        return int(self.snapshotting.repository.get(order_id).version)

    def read_log(self, page: int) -> int:
        """The whole application log in pages, each notification decoded to its event."""
        recorder: Any = self.app.recorder
        mapper = self.app.mapper
        count, start = 0, 1
        while True:
            notifications = recorder.select_notifications(start, page)
            count += len([mapper.to_domain_event(n) for n in notifications])
            if len(notifications) < page:
                return count
            start = notifications[-1].id + 1

    def close(self) -> None:
        """Close both applications."""
        self.app.close()
        self.snapshotting.close()

"""eventsourcing's own projection runner (``eventsourcing.projection``, 9.x) on the order
events of ``contenders_eventsourcing``: a view that is a ``PostgresTrackingRecorder``,
writing the read-model upsert and the tracking record in one transaction per event, as
the library's documentation shows. PostgreSQL only: its SQLite recorder has no
``subscribe()``, which its runner needs.

No ``from __future__ import annotations`` here: the library's ``singledispatchmethod``
reads the event class from the annotation at class creation.
"""

from typing import Any

from contenders_eventsourcing import Order
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection

UPSERT = (
    "INSERT INTO {schema}.es_totals (id, items, cents) VALUES (%s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET items = es_totals.items + excluded.items,"
    " cents = es_totals.cents + excluded.cents"
)


class TotalsView(PostgresTrackingRecorder):
    """The read model and its tracking record, in one transaction per event."""

    def add(self, order: str, items: int, cents: int, tracking: Tracking) -> None:
        """Add up one event of ``order`` and record that it was processed."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                UPSERT.format(schema=self.datastore.schema),  # type: ignore[arg-type]
                (order, items, cents),
                prepare=True,
            )
            self._insert_tracking(curs, tracking)


class TotalsProjection(Projection[TotalsView]):
    """One row per order: items and cents added up."""

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def created(self, domain_event: Order.Created, tracking: Tracking) -> None:
        self.view.add(str(domain_event.originator_id), 0, 0, tracking)

    @process_event.register
    def added(self, domain_event: Order.ItemAdded, tracking: Tracking) -> None:
        q = domain_event.quantity
        self.view.add(
            str(domain_event.originator_id), q, q * domain_event.unit_price_cents, tracking
        )

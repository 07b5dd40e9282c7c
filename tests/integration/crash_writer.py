"""A process that places orders forever; the crash test kills it with SIGKILL.

Usage: python crash_writer.py URL PUBLISHED_FILE [SCHEMA]. After each commit the bus
handler appends the event id to PUBLISHED_FILE (flushed and fsynced): the external
effect that must never exist for an event whose transaction did not commit.
"""

from __future__ import annotations

import os
import sys
import uuid

import tidings
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.examples.shop.repository import OrderRepository


def main() -> None:
    """Place orders until killed."""
    url, published = sys.argv[1], sys.argv[2]
    options = {"schema": sys.argv[3]} if len(sys.argv) > 3 else {}
    store = tidings.connect(url, registry=tidings.EventRegistry(SHOP_EVENTS), **options)
    with open(published, "a", encoding="utf-8") as sink:

        def effect(event: OrderPlaced) -> None:
            sink.write(f"{event.event_id}\n")
            sink.flush()
            os.fsync(sink.fileno())

        store.bus.subscribe(OrderPlaced, effect)
        while True:
            order = Order(f"o-{uuid.uuid4().hex[:12]}", "crash@example.com")
            order.add_line("BOOK-42", 1, 1_000)
            order.place()
            with store.unit_of_work() as uow:
                OrderRepository(uow).add(order)


if __name__ == "__main__":
    main()

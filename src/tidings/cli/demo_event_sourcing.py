"""``tidings demo``, section 2: the event-sourced Order (spec 6.3), told as a story."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.markup import escape

import tidings
from tidings.adapters.extras import require
from tidings.application.repository import EventSourcedRepository
from tidings.cli.demo import console, euros, say
from tidings.domain.ids import uuid7
from tidings.errors import ConfigurationError
from tidings.examples.shop.es_orders import ORDER_EVENTS, ORDER_UPCASTERS, ItemAdded, Order
from tidings.records import EventRecord

DAY = datetime(2025, 1, 15, tzinfo=UTC)


class StoryClock:
    """The demo's clock: it says whatever time the story has reached."""

    def __init__(self) -> None:
        self.now = DAY

    def __call__(self) -> datetime:
        return self.now

    def at(self, hhmm: str) -> None:
        """Move to ``hh:mm`` of the story's day."""
        hours, minutes = hhmm.split(":")
        self.now = DAY.replace(hour=int(hours), minute=int(minutes))


def hhmm(moment: datetime | None) -> str:
    """A time of the story's day as hh:mm."""
    return moment.astimezone(UTC).strftime("%H:%M") if moment else "-"


def describe(order: Order) -> str:
    """Status, lines and total of an order, in a few words."""
    lines = ", ".join(f"{line.quantity} x {line.sku}" for line in order.lines.values())
    return f"{order.status}, {lines or 'no lines'}, total {euros(order.total_cents)}"


def event_sourcing(store: tidings.Store) -> None:
    """Spec 6.3: state rebuilt from events, a temporal query, snapshots, an upcast event,
    a forgotten customer."""
    console.rule("2. Event sourcing (spec 6.3)")
    store.registry.register(*ORDER_EVENTS)
    for (event_type, from_version), upcaster in ORDER_UPCASTERS.items():
        store.registry.add_upcaster(event_type, from_version, upcaster)
    clock = StoryClock()
    rebuilt_from_events(store, store.repository(Order, clock=clock), clock)
    snapshots(store, store.repository(Order, snapshot_every=5, clock=clock), clock)
    upcast_old_event(store, store.repository(Order))
    forgotten_customer(store, store.repository(Order, clock=clock), clock)


def rebuilt_from_events(
    store: tidings.Store, orders: EventSourcedRepository[Order], clock: StoryClock
) -> None:
    """Dave's order lives only as events; loading replays them, now or as of a time."""
    say("Dave's order o-2001 has no row anywhere: its events are the only truth.")
    steps: list[tuple[str, str, Callable[[Order], None]]] = [
        ("09:05", "adds 2 x BOOK-42 at €19.50", lambda o: o.add_item("BOOK-42", 2, 1_950)),
        ("09:20", "adds 1 x LAMP-3 at €49.00", lambda o: o.add_item("LAMP-3", 1, 4_900)),
        ("09:25", "removes LAMP-3", lambda o: o.remove_item("LAMP-3")),
        ("09:30", "places it", lambda o: o.place()),
    ]
    clock.at("09:00")
    with store.unit_of_work() as uow:
        orders.save(uow, Order.create("o-2001", "dave@example.com", clock=clock))
    say("09:00 Dave opens it: one unit of work appends OrderCreated.", 2)
    for time, what, command in steps:
        clock.at(time)
        order = orders.get("o-2001")
        command(order)
        with store.unit_of_work() as uow:
            orders.save(uow, order)
        say(f"{time} Dave {what}: load, one command, one more event.", 2)
    stream = "; ".join(
        f"v{e.aggregate_version} {type(e).__name__} {hhmm(e.occurred_at)}"
        for e in store.read_stream("o-2001")
    )
    say(f"Its stream: {stream}.", 2)
    loaded = orders.load("o-2001")
    say(
        f"State rebuilt from events: replaying {loaded.replayed} events gives "
        f"{describe(loaded.aggregate)}.",
        2,
    )
    then = orders.get("o-2001", as_of=clock.now.replace(hour=9, minute=22))
    info = store.stream_info("o-2001")
    say(
        f'Temporal query, "what was o-2001 at 09:22?": {describe(then)} (version '
        f"{then.version} of {info.version}; its events run from {hhmm(info.first_occurred_at)} "
        f"to {hhmm(info.last_occurred_at)}).",
        2,
    )


def snapshots(
    store: tidings.Store, orders: EventSourcedRepository[Order], clock: StoryClock
) -> None:
    """Snapshots every five events, taken from memory at save time, and one on demand."""
    say()
    say("Erin's office order o-2002 grows all day; the repository snapshots orders every")
    say("5 events, from the state in memory, in the transaction that saves the events.")
    order = Order.create("o-2002", "erin@example.com", clock=clock)
    for n in range(1, 13):
        clock.at(f"{9 + n // 2:02d}:{30 * (n % 2):02d}")
        order.add_item(f"PAPER-{n}", 1, 500)
        with store.unit_of_work() as uow:
            orders.save(uow, order)
    now = orders.load("o-2002")
    say(
        f"Loading it now: snapshot at version {now.snapshot_at} + {now.replayed} events "
        f"instead of all {now.aggregate.version}; {len(now.aggregate.lines)} lines.",
        2,
    )
    back = orders.load("o-2002", version=7)
    say(
        f"Loading version 7: snapshot at version {back.snapshot_at} + {back.replayed} "
        "events; a temporal load never starts from a newer snapshot.",
        2,
    )
    orders.snapshot(now.aggregate)
    again = orders.load("o-2002")
    say(
        f"An on-demand snapshot (orders.snapshot(order)): now version "
        f"{again.snapshot_at} + {again.replayed} events.",
        2,
    )


def upcast_old_event(store: tidings.Store, orders: EventSourcedRepository[Order]) -> None:
    """An event stored by last year's code (price as a euro string) is read as today's."""
    say()
    old_payload = {"sku": "PEN-1", "quantity": 3, "price": "2.40"}
    say("Order o-1999 was stored by last year's code, when ItemAdded was at version 1:")
    say(f"orders.item_added v1 {json.dumps(old_payload)}", 4)
    last_year = DAY.replace(year=2024)
    created = Order.create("o-1999", "frank@example.com", clock=lambda: last_year)
    record = EventRecord(
        event_id=uuid7(),
        stream_id="o-1999",
        version=2,
        event_type="orders.item_added",
        schema_version=1,
        occurred_at=last_year,
        data=json.dumps(old_payload).encode(),
    )
    with store.database.transaction() as tx:
        store.events.append(tx, [store.codec.encode(created.pending_events[0]), record], 0)
    order = orders.get("o-1999")
    (added,) = [e for e in store.read_stream("o-1999") if isinstance(e, ItemAdded)]
    say(
        f"Read today, the upcaster makes it ItemAdded v{ItemAdded.schema_version} with "
        f"unit_price_cents={added.unit_price_cents}; the order loads as {describe(order)}.",
        2,
    )


ADDRESS = "12 Rose Lane, Leeds"


def forgotten_customer(
    store: tidings.Store, orders: EventSourcedRepository[Order], clock: StoryClock
) -> None:
    """Grace's address is sealed with her own key; forgetting her deletes the key."""
    say()
    try:
        require("crypto", "Sealing personal data")
    except ConfigurationError as missing:  # the base install: the rest of the demo goes on
        say(escape(f"Skipped here, a customer forgotten: {missing}. (`make demo` installs it.)"))
        return
    say(f"Grace (customer c-grace) orders o-2003 to {ADDRESS}. The address is her personal")
    say("data: OrderCreated.personal_data seals it with Grace's own key (AES-GCM).")
    clock.at("16:00")
    order = Order.create("o-2003", "c-grace", shipping_address=ADDRESS, clock=clock)
    order.add_item("SCARF-2", 1, 2_500)
    order.place()
    with store.unit_of_work() as uow:
        orders.save(uow, order, snapshot=True)
    stored = json.loads(next(store.events.read_stream("o-2003")).data)["shipping_address"]
    back = orders.get("o-2003").shipping_address
    say(f"Stored: shipping_address {stored[:32]}...; read back: {back}.", 2)
    store.forget("c-grace")
    say("Grace asks to be forgotten: store.forget('c-grace') (or: tidings forget --db URL", 2)
    say("c-grace) deletes her key, from the file and from its write-ahead log.", 2)
    loaded = orders.load("o-2003")
    say(
        f"o-2003 still loads from its snapshot: {describe(loaded.aggregate)}, shipping to "
        f"{loaded.aggregate.shipping_address}; its events read the same way.",
        2,
    )
    path: Path = getattr(store.database, "path")  # noqa: B009 - the demo runs on SQLite
    files = [path, path.with_name(path.name + "-wal")]
    found = sum(f.read_bytes().count(ADDRESS.encode()) for f in files if f.exists())
    key = "none" if store.keys is None or store.keys.find("c-grace") is None else "still there"
    say(f"The database files hold {ADDRESS!r} {found} times; Grace's key: {key}.", 2)

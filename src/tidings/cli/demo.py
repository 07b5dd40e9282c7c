"""``tidings demo``: the shop example told as a story, on an embedded SQLite file."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from rich.console import Console

import tidings
from tidings.domain.events import DomainEvent
from tidings.errors import ConcurrencyError, ConfigurationError, DomainError, StorageError
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.examples.shop.repository import OrderRepository

console = Console(highlight=False, soft_wrap=True)


def say(text: str = "", indent: int = 0) -> None:
    """Print one line of the story."""
    console.print(" " * indent + text)


def euros(cents: int) -> str:
    """Format cents as euros."""
    return f"€{cents / 100:.2f}"


def run_demo(db: Path | None) -> None:
    """Play every section of the demo on a new SQLite file."""
    if db is None:
        db = Path(tempfile.mkdtemp(prefix="tidings-demo-")) / "shop.db"
    elif db.exists():
        raise ConfigurationError(f"{db} already exists: the demo needs a new file, pick another")
    db.parent.mkdir(parents=True, exist_ok=True)
    # The story says what happens; the workers' own log lines would only repeat it.
    logging.getLogger("tidings").setLevel(logging.CRITICAL)
    store = tidings.connect(
        f"sqlite:///{db.resolve()}", registry=tidings.EventRegistry(SHOP_EVENTS)
    )
    try:
        console.rule("[bold]tidings demo")
        say(f"Event store: SQLite file [bold]{db.resolve()}[/] (WAL, synchronous=FULL)")
        with store.unit_of_work() as uow:
            OrderRepository(uow).create_table()
        recording_and_publishing(store)
        from tidings.cli.demo_event_sourcing import event_sourcing  # it imports this module

        event_sourcing(store)
        from tidings.cli.demo_messaging import messaging  # it imports this module

        messaging(db.parent)
        from tidings.cli.demo_sagas import sagas  # it imports this module

        sagas(store)
        from tidings.cli.demo_projections import projections  # it imports this module

        projections(store)
    finally:
        store.close()
    say()
    say(
        f"Everything above is in {db.resolve()} (and Orders and Inventory of sections 3 and 4 "
        f"in {db.parent.resolve()}/orders.db and inventory.db); open them with any SQLite client."
    )


def recording_and_publishing(store: tidings.Store) -> None:
    """Spec 6.1.1: the aggregate records, the use case publishes after the commit."""
    console.rule("1. Recording and publishing (spec 6.1.1)")
    delivered: list[str] = []

    def confirm(event: OrderPlaced) -> None:
        delivered.append(
            f"notification: emails {event.customer_id} that {event.aggregate_id} "
            f"({euros(event.total_cents)}) is confirmed"
        )

    def reserve(event: OrderPlaced) -> None:
        items = ", ".join(f"{line.quantity} x {line.sku}" for line in event.lines)
        delivered.append(f"inventory: reserves {items} for {event.aggregate_id}")

    store.bus.subscribe(OrderPlaced, confirm, name="notification")
    store.bus.subscribe(OrderPlaced, reserve, name="inventory")
    alice = publish_after_commit(store, delivered)
    nothing_on_failed_save(store, delivered)
    rules_guarded_by_the_aggregate(alice)
    stale_writer_refused(store)


def publish_after_commit(store: tidings.Store, delivered: list[str]) -> Order:
    """A placed order is delivered to handlers only once its transaction committed."""
    alice = Order("o-1001", "alice@example.com")
    alice.add_line("BOOK-42", 2, 1_950)
    alice.add_line("MUG-7", 1, 1_350)
    alice.place()
    say("Alice puts two products in order o-1001 and places it.")
    say("order.place() checks the rules, sets status PLACED and records OrderPlaced.", 2)
    say(
        f"Pending on the aggregate: {len(alice.pending_events)} event; delivered so far: "
        f"{len(delivered)}.",
        2,
    )
    with store.unit_of_work() as uow:
        OrderRepository(uow).add(alice)
        say("The use case writes the orders row and the event in one transaction...", 2)
        say(f"...still inside it, delivered so far: {len(delivered)}.", 2)
    say("COMMIT succeeded. Only now does the bus hand OrderPlaced to its handlers:", 2)
    for line in delivered:
        say(f"→ {line}", 4)
    show_log(store)
    return alice


def nothing_on_failed_save(store: tidings.Store, delivered: list[str]) -> None:
    """A save that fails at the database publishes nothing and keeps the event pending."""
    say()
    say("Bob's checkout reuses order number o-1001, which the orders table already holds.")
    bob = Order("o-1001", "bob@example.com")
    bob.add_line("LAMP-3", 1, 4_900)
    bob.place()
    before = len(delivered)
    try:
        with store.unit_of_work() as uow:
            OrderRepository(uow).add(bob)
    except StorageError as exc:
        say(f"The save fails at the database: {str(exc).split(' (')[0]}.", 2)
    say(
        f"The transaction rolled back: handlers called {len(delivered) - before} times, "
        "nothing added to the event log.",
        2,
    )
    say(
        f"OrderPlaced is still pending on Bob's order ({len(bob.pending_events)} event), "
        "so the use case can pick a new number and retry.",
        2,
    )
    show_log(store)


def rules_guarded_by_the_aggregate(placed: Order) -> None:
    """The aggregate refuses an empty order and a second placing."""
    say()
    say("The aggregate guards its own rules:")
    try:
        Order("o-1002", "carol@example.com").place()
    except DomainError as exc:
        say(f"placing an empty order → {type(exc).__name__}: {exc}", 2)
    try:
        placed.place()
    except DomainError as exc:
        say(f"placing {placed.id} again → {type(exc).__name__}: {exc}", 2)


def stale_writer_refused(store: tidings.Store) -> None:
    """Two writers from the same version: the second gets ConcurrencyError."""
    say()
    say("Two clerks load o-1001 at version 1 and both cancel it.")
    clerks = []
    for _ in range(2):
        with store.unit_of_work() as uow:
            order = OrderRepository(uow).get("o-1001")
        if order is None:
            raise ConfigurationError("the demo's order o-1001 is missing from shop_orders")
        clerks.append(order)
    clerks[0].cancel("customer called")
    clerks[1].cancel("payment declined")
    with store.unit_of_work() as uow:
        OrderRepository(uow).update(clerks[0])
    say("The first clerk's change commits (OrderCancelled is event 2 of o-1001).", 2)
    try:
        with store.unit_of_work() as uow:
            OrderRepository(uow).update(clerks[1])
    except ConcurrencyError as exc:
        say(
            f"The second gets ConcurrencyError: stream at version {exc.actual_version}, "
            f"expected {exc.expected_version}. Nothing of it was written.",
            2,
        )
    show_log(store)


def show_log(store: tidings.Store) -> None:
    """Print the event log as it is now."""
    events: list[DomainEvent] = store.read_all()
    listing = "; ".join(
        f"#{n} {type(e).__name__} {e.aggregate_id} v{e.aggregate_version}"
        for n, e in enumerate(events, start=1)
    )
    say(f"Event log: {len(events)} event(s){': ' + listing if listing else ''}.", 2)

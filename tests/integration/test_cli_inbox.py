"""``tidings inbox``: list, retry after a fix, purge."""

from __future__ import annotations

from pathlib import Path

import tidings
from tidings.application.handling import Delivery
from tidings.examples.shop.inventory import handlers, stock
from tidings.examples.shop.orders import SHOP_EVENTS, Order
from tidings.serialization.cloudevents import to_message

from .cli import run_cli


def test_retry_handles_what_was_fixed_and_keeps_what_still_fails(tmp_path: Path) -> None:
    """A buried OrderPlaced is handled on retry; unreadable bytes stay a dead letter; purge
    removes it."""
    db = f"sqlite:///{tmp_path / 'inventory.db'}"
    with tidings.connect(db, registry=tidings.EventRegistry(SHOP_EVENTS)) as store:
        order = Order("o-7", "c@example.com")
        order.add_line("MUG-7", 3, 1_350)
        order.place()
        record = store.codec.encode(order.pending_events[0])
        body = to_message(record, "shop").body
        processor = store.processor(handlers())
        processor.bury(Delivery(body, record), "handler inventory.decrease-stock failed 5 times")
        processor.bury(Delivery(b"\x00garbage", None), "not valid JSON")
    listing = run_cli("inbox", "dead-letters", "--db", db)
    assert "failed 5 times" in listing.stdout
    assert "not valid JSON" in listing.stdout
    retried = run_cli(
        "inbox",
        "retry",
        "--db",
        db,
        "--handlers",
        "tidings.examples.shop.inventory:handlers",
        "--all",
    )
    assert "1 of 2 dead letter(s) handled" in retried.stdout, retried.stderr
    with tidings.connect(db) as store, store.unit_of_work() as uow:
        assert stock(uow, "MUG-7") == 97
    left = run_cli("inbox", "dead-letters", "--db", db).stdout.strip().splitlines()
    assert len(left) == 1
    assert "unreadable" in left[0]
    assert "not valid JSON" in left[0]
    purged = run_cli("inbox", "purge", "--db", db, "--all", "--yes")
    assert "1 dead letter(s) deleted" in purged.stdout
    assert "no dead letters" in run_cli("inbox", "dead-letters", "--db", db).stdout

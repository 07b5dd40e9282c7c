"""Your own tables and the event log in one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import tidings
from tidings.domain.events import DomainEvent
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.examples.shop.repository import OrderRepository
from tidings.records import FreshRecords
from tidings.testing.contract import Counted, Counter

from ..conftest import MakeStore


@pytest.fixture
def shop(make_sql_store: MakeStore) -> tidings.Store:
    """A store with the shop's orders table."""
    store = make_sql_store(tidings.EventRegistry(SHOP_EVENTS))
    with store.unit_of_work() as uow:
        uow.execute("DROP TABLE IF EXISTS shop_orders")  # PostgreSQL tests share public
        OrderRepository(uow).create_table()
    return store


def placed_order(order_id: str, customer: str = "alice@example.com") -> Order:
    """A draft order with one line, placed (so it holds one pending OrderPlaced)."""
    order = Order(order_id, customer)
    order.add_line("BOOK-42", 2, 1_950)
    order.place()
    return order


def test_state_and_events_commit_together(shop: tidings.Store) -> None:
    """The orders row and OrderPlaced are both there after the commit, and published once."""
    delivered: list[DomainEvent] = []
    shop.bus.subscribe(OrderPlaced, delivered.append)
    order = placed_order("o-1")
    with shop.unit_of_work() as uow:
        OrderRepository(uow).add(order)
    with shop.unit_of_work() as uow:
        loaded = OrderRepository(uow).get("o-1")
    assert loaded is not None
    assert (loaded.status, loaded.version, loaded.total_cents) == ("PLACED", 1, 3_900)
    assert delivered == list(shop.read_stream("o-1"))
    assert len(delivered) == 1


def test_a_constraint_violation_publishes_nothing_and_keeps_the_events(
    shop: tidings.Store,
) -> None:
    """A save refused by the database is a StorageError; the log is unchanged, events stay."""
    delivered: list[DomainEvent] = []
    shop.bus.subscribe(OrderPlaced, delivered.append)
    with shop.unit_of_work() as uow:
        OrderRepository(uow).add(placed_order("o-1"))
    delivered.clear()
    duplicate = placed_order("o-1", "bob@example.com")
    with (
        pytest.raises(tidings.StorageError, match="shop_orders|duplicate key|UNIQUE") as caught,
        shop.unit_of_work() as uow,
    ):
        OrderRepository(uow).add(duplicate)
    assert not isinstance(caught.value, tidings.ConcurrencyError)
    assert caught.value.__cause__ is not None  # the driver's error is chained, not lost
    assert delivered == []
    assert [e.customer_id for e in shop.read_all()] == ["alice@example.com"]  # type: ignore[attr-defined]
    assert len(duplicate.pending_events) == 1


def test_your_writes_roll_back_with_the_unit_of_work(shop: tidings.Store) -> None:
    """An exception after your own INSERT leaves neither the row nor any event behind."""
    with pytest.raises(KeyError), shop.unit_of_work() as uow:
        OrderRepository(uow).add(placed_order("o-2"))
        raise KeyError("the card was declined")
    with shop.unit_of_work() as uow:
        assert OrderRepository(uow).get("o-2") is None
    assert shop.read_all() == []


def test_an_update_from_a_stale_version_is_refused_whole(shop: tidings.Store) -> None:
    """Two clerks cancel the same order: the second gets ConcurrencyError; its row update
    is rolled back too."""
    with shop.unit_of_work() as uow:
        OrderRepository(uow).add(placed_order("o-3"))
    clerks = []
    for _ in range(2):
        with shop.unit_of_work() as uow:
            clerks.append(OrderRepository(uow).get("o-3"))
    first, second = clerks
    assert first is not None
    assert second is not None
    first.cancel("customer called")
    second.cancel("fraud suspected")
    with shop.unit_of_work() as uow:
        OrderRepository(uow).update(first)
    with pytest.raises(tidings.ConcurrencyError, match="o-3"), shop.unit_of_work() as uow:
        OrderRepository(uow).update(second)
    assert [e.reason for e in shop.read_stream("o-3", from_version=2)] == [  # type: ignore[attr-defined]
        "customer called"
    ]


@pytest.mark.parametrize("count", [1, 3])
def test_fresh_records_get_their_positions_in_place_without_copies(
    make_sql_store: MakeStore, count: int
) -> None:
    """The unit of work's FreshRecords come back as the same objects, now positioned as
    the log stores them: the SQL stores spare a copy of each record they write."""
    store = make_sql_store(tidings.EventRegistry([Counted]))
    counter = Counter(f"counter-fresh-{count}")
    for step in range(count):
        counter.increment(step)
    records = FreshRecords(store.codec.encode(e) for e in counter.pending_events)
    with store.database.transaction() as tx:
        stored = store.events.append(tx, records, 0)
    assert all(mine is theirs for mine, theirs in zip(records, stored, strict=True))
    assert [r.position for r in stored] == [r.position for r in store.events.read_all(0)]
    assert all(r.position > 0 for r in stored)


def test_an_event_id_stored_before_is_a_storage_error_not_a_concurrency_error(
    make_sql_store: MakeStore,
) -> None:
    """One event whose id the log already holds, at the right version of its stream: the
    unique event id refuses it, and the error says so (nobody else wrote the stream)."""
    store = make_sql_store(tidings.EventRegistry([Counted]))
    first, second = Counter("counter-a"), Counter("counter-b")
    first.increment(1)
    second.increment(1)
    [record] = [store.codec.encode(e) for e in first.pending_events]
    [other] = [store.codec.encode(e) for e in second.pending_events]
    with store.database.transaction() as tx:
        store.events.append(tx, [record], 0)
    clash = replace(other, event_id=record.event_id)
    with (
        pytest.raises(tidings.StorageError, match="UNIQUE|duplicate key"),
        store.database.transaction() as tx,
    ):
        store.events.append(tx, [clash], 0)
    assert store.events.stream_version("counter-b") == 0


def test_records_of_one_batch_keep_each_its_own_metadata(make_sql_store: MakeStore) -> None:
    """Metadata shared by neighbours and metadata of its own, in one multi-row append:
    every record reads back with exactly the metadata it was written with."""
    store = make_sql_store(tidings.EventRegistry([Counted]))
    counter = Counter("counter-meta")
    for step in range(5):
        counter.increment(step)
    shared = b'{"by":"a"}'
    metadata = [shared, shared, b'{"by":"b"}', b"{}", shared]
    records = [
        store.codec.encode(e, meta)
        for e, meta in zip(counter.pending_events, metadata, strict=True)
    ]
    with store.database.transaction() as tx:
        store.events.append(tx, records, 0)
    stored = [json.loads(r.metadata) for r in store.events.read_stream("counter-meta")]
    assert stored == [json.loads(m) for m in metadata]  # PostgreSQL's JSONB respaces it

"""Rows damaged behind tidings' back give errors that say what and where, on SQL backends."""

from __future__ import annotations

from pathlib import Path

import pytest

import tidings
from tidings.examples.shop.orders import SHOP_EVENTS, Order

from ..conftest import MakeStore


@pytest.fixture
def store_with_one_order(make_sql_store: MakeStore) -> tidings.Store:
    """A store holding one committed OrderPlaced of order o-9."""
    store = make_sql_store(tidings.EventRegistry(SHOP_EVENTS))
    order = Order("o-9", "alice@example.com")
    order.add_line("BOOK-42", 1, 1_000)
    order.place()
    with store.unit_of_work() as uow:
        uow.track(order)
    return store


def damage(store: tidings.Store, assignment: str) -> None:
    """Run ``UPDATE <events table> SET <assignment>`` on the one stored event."""
    table = store.database.tables["events"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        uow.execute(f"UPDATE {table} SET {assignment}")


def test_a_wrong_field_type_names_the_type_the_field_and_the_row(
    store_with_one_order: tidings.Store,
) -> None:
    """A string where an int belongs: DecodeError with class, JSON path, stream and position."""
    store = store_with_one_order
    if store.database.dialect == "sqlite":
        damage(store, "data = json_set(data, '$.total_cents', 'a lot')")
    else:
        damage(store, "data = jsonb_set(data, '{total_cents}', '\"a lot\"')")
    with pytest.raises(tidings.DecodeError) as caught:
        store.read_all()
    message = str(caught.value)
    for part in ("OrderPlaced", "$.total_cents", "'o-9'", "position 1", "upcaster"):
        assert part in message
    assert store.database.describe() in message


def test_an_unknown_event_type_says_which_type_and_what_is_known(
    store_with_one_order: tidings.Store,
) -> None:
    """A type no class is registered for: UnknownEventTypeError naming it and the known ones."""
    damage(store_with_one_order, "event_type = 'OrderTeleported'")
    with pytest.raises(tidings.UnknownEventTypeError, match="OrderTeleported.*OrderPlaced"):
        list(store_with_one_order.read_stream("o-9"))


def test_a_schema_version_from_the_future_is_refused(
    store_with_one_order: tidings.Store,
) -> None:
    """An event stored by newer code is not guessed at: the error says to run that code."""
    damage(store_with_one_order, "schema_version = 7")
    with pytest.raises(tidings.UnknownEventTypeError, match="version 7.*newer code"):
        store_with_one_order.read_all()


def test_invalid_json_and_a_broken_timestamp_are_reported_on_sqlite(tmp_path: Path) -> None:
    """SQLite keeps JSON and times as text, so damage there can be anything: both cases say
    where. (PostgreSQL's jsonb and timestamptz columns refuse such values on write.)"""
    store = tidings.connect(
        f"sqlite:///{tmp_path / 'shop.db'}", registry=tidings.EventRegistry(SHOP_EVENTS)
    )
    order = Order("o-10", "carol@example.com")
    order.add_line("MUG-7", 1, 1_350)
    order.place()
    with store.unit_of_work() as uow:
        uow.track(order)
    damage(store, "data = '{\"customer_id\": '")
    with pytest.raises(tidings.DecodeError, match="not valid JSON.*'o-10'"):
        store.read_all()
    damage(store, "data = '{}', occurred_at = 'yesterday'")
    with pytest.raises(tidings.DecodeError, match="'yesterday'.*position 1.*corrupt"):
        store.read_all()
    store.close()

"""The in-flight record (the ``InFlight`` port) on every backend: what a consumer fetched
and has not finished, which holds the later events of those aggregates back."""

from __future__ import annotations

import pytest

import tidings
from tidings.ports import InFlight, InFlightMessage

from ..conftest import MakeStore

NOW = 1_800_000_000.0
WINDOW = 600.0


def in_flight_of(store: tidings.Store) -> InFlight:
    assert store.in_flight is not None
    return store.in_flight


def ids(found: list[InFlightMessage]) -> set[str]:
    return {m.event_id for m in found}


def test_a_note_finds_the_earlier_messages_of_its_aggregates_and_only_those(
    make_store: MakeStore,
) -> None:
    """A batch's note returns what the same consumer fetched before of the batch's
    aggregates, with their versions; other aggregates and other consumers do not count."""
    in_flight = in_flight_of(make_store())
    in_flight.note("c", [InFlightMessage("a1", "a", 1), InFlightMessage("b1", "b", 1)], NOW, WINDOW)
    in_flight.note("other", [InFlightMessage("x1", "a", 1)], NOW, WINDOW)
    found = in_flight.note("c", [InFlightMessage("a2", "a", 2)], NOW + 1, WINDOW)
    assert InFlightMessage("a1", "a", 1) in found
    assert ids(found) - {"a2"} == {"a1"}


def test_finishing_forgets_only_in_a_committed_transaction(make_store: MakeStore) -> None:
    """A message finished in a transaction that rolls back stays in flight; one finished
    in a committed transaction is gone, and the rest of its batch stays."""
    store = make_store()
    in_flight = in_flight_of(store)
    batch = [InFlightMessage("a1", "a", 1), InFlightMessage("a2", "a", 2)]
    in_flight.note("c", batch, NOW, WINDOW)
    with pytest.raises(RuntimeError), store.database.transaction() as tx:
        in_flight.finish(tx, "c", ["a1"])
        raise RuntimeError("the handlers' transaction fails")
    assert ids(in_flight.note("c", [InFlightMessage("a3", "a", 3)], NOW, WINDOW)) >= {"a1", "a2"}
    with store.database.transaction() as tx:
        in_flight.finish(tx, "c", ["a1", "a3"])
    assert ids(in_flight.note("c", [InFlightMessage("a4", "a", 4)], NOW, WINDOW)) - {"a4"} == {"a2"}


def test_a_message_fetched_twice_is_gone_once_finished(make_store: MakeStore) -> None:
    """A held message is fetched (and noted) again; finishing it once forgets it in every
    note that has it, and another consumer's record of the same id stays."""
    store = make_store()
    in_flight = in_flight_of(store)
    in_flight.note("c", [InFlightMessage("a1", "a", 1), InFlightMessage("b1", "b", 1)], NOW, WINDOW)
    in_flight.note("c", [InFlightMessage("a1", "a", 1)], NOW + 5, WINDOW)
    in_flight.note("other", [InFlightMessage("a1", "a", 1)], NOW + 5, WINDOW)
    with store.database.transaction() as tx:
        in_flight.finish(tx, "c", ["a1"])
    found = in_flight.note(
        "c", [InFlightMessage("a2", "a", 2), InFlightMessage("b2", "b", 2)], NOW + 6, WINDOW
    )
    assert ids(found) - {"a2", "b2"} == {"b1"}
    assert "a1" in ids(in_flight.note("other", [InFlightMessage("a9", "a", 9)], NOW + 6, WINDOW))


def test_messages_not_seen_within_the_window_stop_counting_and_go(make_store: MakeStore) -> None:
    """A message last fetched longer ago than the window no longer holds its aggregate;
    ``delete_stale`` deletes it and counts it, but not one fetched again since."""
    store = make_store()
    in_flight = in_flight_of(store)
    in_flight.note("c", [InFlightMessage("a1", "a", 1), InFlightMessage("b1", "b", 1)], NOW, WINDOW)
    in_flight.note("c", [InFlightMessage("b1", "b", 1)], NOW + 400, WINDOW)
    later = NOW + WINDOW + 100
    found = in_flight.note(
        "c", [InFlightMessage("a2", "a", 2), InFlightMessage("b2", "b", 2)], later, WINDOW
    )
    assert ids(found) - {"a2", "b2"} == {"b1"}
    assert in_flight.delete_stale("c", later - WINDOW) == 1  # a1; b1 was seen since
    assert in_flight.delete_stale("c", later - WINDOW) == 0
    found = in_flight.note("c", [InFlightMessage("b3", "b", 3)], later, WINDOW)
    assert ids(found) - {"b3"} == {"b1", "b2"}

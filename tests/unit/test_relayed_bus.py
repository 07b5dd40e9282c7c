"""A store with an outbox runs bus handlers only through a relay, and warns once when
handlers are subscribed and no relay in the process delivers to its bus."""

from __future__ import annotations

import logging

import pytest

import tidings
from tidings.testing.contract import Counted, Counter, new_id

NO_RELAY = "no relay in this process does"


def outbox_store() -> tidings.Store:
    """A memory store with an outbox that knows Counted."""
    return tidings.connect("memory://", registry=tidings.EventRegistry([Counted]), outbox=True)


def commit_one(store: tidings.Store) -> None:
    """Commit one Counted event on a new stream."""
    counter = Counter(new_id())
    counter.increment()
    with store.unit_of_work() as uow:
        uow.track(counter)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages the bus logged as warnings."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tidings.application.relayed_bus" and r.levelno == logging.WARNING
    ]


def test_subscribers_and_no_relay_get_one_warning_at_the_first_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three commits with a subscriber and no relay: one warning, naming the outbox and
    how to start a relay; the handler did not run (the events wait in the outbox)."""
    store = outbox_store()
    seen: list[str] = []
    store.bus.subscribe(Counted, lambda e: seen.append(e.event_id))
    with caplog.at_level(logging.WARNING, logger="tidings.application.relayed_bus"):
        for _ in range(3):
            commit_one(store)
    [warning] = warnings_of(caplog)
    assert NO_RELAY in warning
    assert "outbox=True" in warning
    assert "store.relay().start()" in warning
    assert seen == []


def test_a_relay_to_the_bus_made_before_the_first_commit_means_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With store.relay() built in the process, the commit warns of nothing, and the
    relay runs the handler."""
    store = outbox_store()
    seen: list[str] = []
    store.bus.subscribe(Counted, lambda e: seen.append(e.event_id))
    relay = store.relay()
    with caplog.at_level(logging.WARNING, logger="tidings.application.relayed_bus"):
        commit_one(store)
    assert warnings_of(caplog) == []
    relay.drain()
    assert len(seen) == 1


@pytest.mark.parametrize("outbox", [True, False])
def test_no_warning_without_subscribers_or_without_an_outbox(
    caplog: pytest.LogCaptureFixture, outbox: bool
) -> None:
    """An outbox with no subscriber has no handler to miss; a store without an outbox
    hands events to its subscribers itself after the commit."""
    store = tidings.connect("memory://", registry=tidings.EventRegistry([Counted]), outbox=outbox)
    seen: list[str] = []
    if not outbox:
        store.bus.subscribe(Counted, lambda e: seen.append(e.event_id))
    with caplog.at_level(logging.WARNING, logger="tidings.application.relayed_bus"):
        commit_one(store)
    assert warnings_of(caplog) == []
    assert len(seen) == (0 if outbox else 1)

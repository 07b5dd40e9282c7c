"""InMemoryBus: who gets which event, in what order, and what a failing handler does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tidings import DomainEvent, HandlerFailure, InMemoryBus

E = TypeVar("E", bound=DomainEvent)


@dataclass(frozen=True, kw_only=True)
class Ping(DomainEvent):
    """A base event with a subclass below."""

    note: str = ""


@dataclass(frozen=True, kw_only=True)
class LoudPing(Ping):
    """A subclass of Ping."""


@dataclass(frozen=True, kw_only=True)
class Pong(DomainEvent):
    """A sibling of Ping: both derive directly from DomainEvent."""


def recorded(event: E, event_id: str) -> E:
    """``event`` with an id, as if an aggregate had recorded it."""
    return event.stamped(event_id=event_id, aggregate_id="a-1", aggregate_version=1)


def ping(event_id: str) -> Ping:
    """A Ping with an id, as if an aggregate had recorded it."""
    return recorded(Ping(), event_id)


def recorder(seen: list[tuple[str, str]], label: str) -> Callable[[DomainEvent], None]:
    """A handler that appends (label, event id) to ``seen``."""

    def handle(event: DomainEvent) -> None:
        seen.append((label, event.event_id))

    return handle


def broken(event: DomainEvent) -> None:
    """A handler that always fails."""
    raise RuntimeError(f"inventory service down for {event.event_id}")


def test_handlers_run_in_subscription_order_and_events_in_the_order_given() -> None:
    """Each event goes through all its handlers, in subscription order, before the next one."""
    bus = InMemoryBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(Ping, recorder(seen, "first"))
    bus.subscribe(Ping, recorder(seen, "second"))
    bus.subscribe(Ping, recorder(seen, "third"))
    assert bus.publish([ping("e1"), ping("e2")]) == []
    assert seen == [
        ("first", "e1"),
        ("second", "e1"),
        ("third", "e1"),
        ("first", "e2"),
        ("second", "e2"),
        ("third", "e2"),
    ]


def test_handlers_of_a_class_and_of_its_base_run_in_subscription_order() -> None:
    """A handler subscribed to Ping before one subscribed to DomainEvent also runs first."""
    bus = InMemoryBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(Ping, recorder(seen, "specific"))
    bus.subscribe(DomainEvent, recorder(seen, "everything"))
    bus.publish([ping("e1")])
    assert seen == [("specific", "e1"), ("everything", "e1")]


def test_a_handler_subscribed_to_domain_event_gets_every_event() -> None:
    """Subscribing to the base class DomainEvent catches events of every class."""
    bus = InMemoryBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(DomainEvent, recorder(seen, "all"))
    events = [
        ping("e1"),
        recorded(Pong(), "e2"),
        recorded(LoudPing(), "e3"),
    ]
    bus.publish(events)
    assert seen == [("all", "e1"), ("all", "e2"), ("all", "e3")]


def test_a_handler_for_a_subclass_gets_neither_the_base_nor_a_sibling() -> None:
    """A LoudPing handler sees only LoudPing; a Ping handler sees Ping and LoudPing."""
    bus = InMemoryBus()
    loud: list[tuple[str, str]] = []
    base: list[tuple[str, str]] = []
    bus.subscribe(LoudPing, recorder(loud, "loud"))
    bus.subscribe(Ping, recorder(base, "ping"))
    bus.publish(
        [
            ping("e1"),
            recorded(Pong(), "e2"),
            recorded(LoudPing(), "e3"),
        ]
    )
    assert loud == [("loud", "e3")]
    assert base == [("ping", "e1"), ("ping", "e3")]


def test_a_handler_subscribed_after_a_publish_gets_the_next_events() -> None:
    """Subscribing later takes effect for the following publish."""
    bus = InMemoryBus()
    seen: list[tuple[str, str]] = []
    bus.publish([ping("e1")])
    bus.subscribe(Ping, recorder(seen, "late"))
    bus.publish([ping("e2")])
    assert seen == [("late", "e2")]


def test_a_raising_handler_is_reported_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure is returned and logged at ERROR with the event id; later handlers run."""
    bus = InMemoryBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(Ping, recorder(seen, "before"))
    bus.subscribe(Ping, broken, name="reserve-stock")
    bus.subscribe(Ping, recorder(seen, "after"))
    event = ping("evt-42")
    with caplog.at_level(logging.ERROR, logger="tidings.application.bus"):
        failures = bus.publish([event])
    assert seen == [("before", "evt-42"), ("after", "evt-42")]
    assert len(failures) == 1
    failure = failures[0]
    assert isinstance(failure, HandlerFailure)
    assert failure.event is event
    assert failure.handler == "reserve-stock"
    assert isinstance(failure.error, RuntimeError)
    assert str(failure) == (
        "handler 'reserve-stock' failed on Ping evt-42: "
        "RuntimeError('inventory service down for evt-42')"
    )
    logged = [r for r in caplog.records if r.name == "tidings.application.bus"]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert "evt-42" in logged[0].getMessage()
    assert "reserve-stock" in logged[0].getMessage()
    assert logged[0].exc_info is not None


def test_a_handler_without_a_name_is_reported_by_its_qualified_name() -> None:
    """The handler's __qualname__ names it in the failure when no name was given."""
    bus = InMemoryBus()
    bus.subscribe(Ping, broken)
    failures = bus.publish([ping("e1"), ping("e2")])
    assert [f.handler for f in failures] == ["broken", "broken"]
    assert [f.event.event_id for f in failures] == ["e1", "e2"]
    assert "handler 'broken' failed on Ping e1" in str(failures[0])


def test_publish_with_no_handlers_returns_no_failures() -> None:
    """An event nobody subscribed to is simply dropped: publish returns []."""
    bus = InMemoryBus()
    assert bus.publish([ping("e1"), recorded(Pong(), "e2")]) == []
    assert bus.publish([]) == []

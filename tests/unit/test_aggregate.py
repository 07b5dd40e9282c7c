"""Aggregate: how it stamps, counts and hands over the events it records."""

from __future__ import annotations

import ast
import pickle
import sys
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import tidings
import tidings.domain
from tidings import DomainError
from tidings.domain import Aggregate, DomainEvent
from tidings.domain.events import ENVELOPE_FIELDS, UNSET_TIME
from tidings.examples.shop.orders import (
    EmptyOrderError,
    Order,
    OrderAlreadyPlacedError,
    OrderLine,
    OrderPlaced,
    OrderStatus,
)
from tidings.testing import FixedClock, SequentialIds

MOMENT = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Noted(DomainEvent):
    """Something was written in a notebook."""

    text: str


class Notebook(Aggregate):
    """The smallest aggregate: it records one event per note."""

    def note(self, text: str) -> DomainEvent:
        """Record a note and return the stamped event."""
        return self.record(Noted(text=text))


def make_notebook(version: int = 0, clock: FixedClock | None = None) -> Notebook:
    """A notebook with a fixed clock and readable ids."""
    return Notebook("nb-1", version=version, clock=clock or FixedClock(), ids=SequentialIds())


def test_record_stamps_the_envelope_from_the_injected_clock_and_ids() -> None:
    """The stamped event has the next id, the clock's time, the aggregate id and version 1."""
    clock = FixedClock()
    notebook = make_notebook(clock=clock)
    stamped = notebook.note("first")
    assert isinstance(stamped, Noted)
    assert stamped.event_id == "evt-000001"
    assert stamped.occurred_at == clock.now
    assert stamped.aggregate_id == "nb-1"
    assert stamped.aggregate_version == 1
    assert stamped.text == "first"
    assert stamped.is_stamped()


def test_record_reads_the_clock_and_the_id_source_again_for_every_event() -> None:
    """A second event gets the next id, the moved clock's time and the next version."""
    clock = FixedClock()
    notebook = make_notebook(clock=clock)
    first = notebook.note("first")
    later = clock.advance(minutes=5)
    second = notebook.note("second")
    assert (first.event_id, second.event_id) == ("evt-000001", "evt-000002")
    assert second.occurred_at == later
    assert second.occurred_at > first.occurred_at
    assert (first.aggregate_version, second.aggregate_version) == (1, 2)


def test_record_leaves_the_given_event_unstamped_and_returns_a_new_one() -> None:
    """The caller's instance is not changed: record returns a stamped copy."""
    notebook = make_notebook()
    original = Noted(text="draft")
    stamped = notebook.record(original)
    assert stamped is not original
    assert not original.is_stamped()
    assert original.aggregate_version == 0
    assert notebook.pending_events == (stamped,)


@dataclass(frozen=True, kw_only=True, slots=True)
class Slotted(DomainEvent):
    """An event class with __slots__: no __dict__ to copy."""

    text: str


def test_a_slotted_event_class_is_stamped_too() -> None:
    """Without a __dict__ the copy is built again; the result is the same."""
    notebook = make_notebook()
    original = Slotted(text="tight")
    stamped = notebook.record(original)
    assert (stamped.text, stamped.event_id, stamped.aggregate_version) == ("tight", "evt-000001", 1)
    assert not original.is_stamped()
    codec = tidings.JsonCodec(tidings.EventRegistry([Slotted]))
    assert codec.decode(codec.encode(stamped)) == stamped


def test_an_event_is_built_from_its_payload_alone_and_has_no_envelope_until_recorded() -> None:
    """The envelope is not an __init__ parameter: a new event reads the class defaults
    and holds nothing of its own for them."""
    event = Noted(text="draft")
    assert (event.event_id, event.aggregate_id, event.aggregate_version) == ("", "", 0)
    assert event.occurred_at == UNSET_TIME
    assert set(vars(event)) == {"text"}
    with pytest.raises(TypeError, match="event_id"):
        Noted(text="draft", event_id="e-1")  # type: ignore[call-arg]


def test_stamped_gives_a_copy_with_the_envelope_and_leaves_the_event_as_it_was() -> None:
    """What a test or an import uses to build an event as stored; slots or not."""
    for event in (Noted(text="n"), Slotted(text="n")):
        copy = event.stamped(
            event_id="e-1", occurred_at=MOMENT, aggregate_id="nb-1", aggregate_version=3
        )
        assert type(copy) is type(event)
        assert (copy.event_id, copy.occurred_at) == ("e-1", MOMENT)
        assert (copy.aggregate_id, copy.aggregate_version, copy.text) == ("nb-1", 3, "n")
        assert not event.is_stamped()


def test_a_recorded_event_keeps_its_envelope_in_fields_equality_repr_and_pickles() -> None:
    """The envelope stays four dataclass fields: listed, compared, shown and pickled."""
    stamped = make_notebook().note("kept")
    assert {f.name for f in fields(stamped)} >= ENVELOPE_FIELDS
    assert "event_id='evt-000001'" in repr(stamped)
    assert pickle.loads(pickle.dumps(stamped)) == stamped  # noqa: S301 - our own bytes
    assert stamped != make_notebook(version=1).note("kept")  # same payload, another version
    assert hash(stamped) == hash(pickle.loads(pickle.dumps(stamped)))  # noqa: S301


def test_replace_changes_the_payload_only_and_its_copy_is_unstamped() -> None:
    """dataclasses.replace refuses an envelope field; its copy of a recorded event is a
    new fact, with no envelope, that can be recorded in its turn."""
    notebook = make_notebook()
    stamped = notebook.note("first")
    with pytest.raises(ValueError, match="event_id"):
        replace(stamped, event_id="e-2")
    changed = replace(stamped, text="second")
    assert not changed.is_stamped()
    assert notebook.record(changed).aggregate_version == 2


def test_version_and_stored_version_count_recorded_and_saved_events() -> None:
    """version counts every event; stored_version only those already pulled for saving."""
    notebook = make_notebook()
    assert (notebook.version, notebook.stored_version) == (0, 0)
    notebook.note("a")
    notebook.note("b")
    assert (notebook.version, notebook.stored_version) == (2, 0)
    notebook.pull_events()
    assert (notebook.version, notebook.stored_version) == (2, 2)
    notebook.note("c")
    assert (notebook.version, notebook.stored_version) == (3, 2)


def test_pending_events_is_a_copy_that_reading_does_not_clear() -> None:
    """pending_events returns a tuple, oldest first, and gives the same events on every read."""
    notebook = make_notebook()
    first, second = notebook.note("a"), notebook.note("b")
    seen = notebook.pending_events
    assert isinstance(seen, tuple)
    assert seen == (first, second)
    assert notebook.pending_events == seen
    notebook.note("c")
    assert len(seen) == 2
    assert len(notebook.pending_events) == 3


def test_pull_events_returns_the_pending_events_and_clears_them() -> None:
    """pull_events hands over the events oldest first, and a second pull finds none."""
    notebook = make_notebook()
    first, second = notebook.note("a"), notebook.note("b")
    assert notebook.pull_events() == [first, second]
    assert notebook.pending_events == ()
    assert notebook.pull_events() == []


def test_recording_an_already_stamped_event_raises_value_error() -> None:
    """An event that already has an envelope cannot be recorded again, nor count a version."""
    notebook = make_notebook()
    stamped = notebook.note("once")
    with pytest.raises(ValueError, match="already recorded"):
        notebook.record(stamped)
    assert notebook.version == 1
    assert notebook.pending_events == (stamped,)


def test_an_empty_aggregate_id_raises_value_error() -> None:
    """An aggregate cannot be built without an identity."""
    with pytest.raises(ValueError, match="non-empty id"):
        Notebook("")


def test_a_negative_version_raises_value_error() -> None:
    """An aggregate cannot be loaded at a version below zero."""
    with pytest.raises(ValueError, match="cannot be negative"):
        Notebook("nb-1", version=-1)


def test_an_aggregate_loaded_at_version_3_stamps_its_next_event_4() -> None:
    """The version an aggregate was loaded with is where its new events continue."""
    notebook = make_notebook(version=3)
    assert notebook.stored_version == 3
    assert notebook.note("next").aggregate_version == 4
    assert (notebook.version, notebook.stored_version) == (4, 3)


def test_placing_an_empty_order_raises_empty_order_error() -> None:
    """An order without lines refuses place() with a DomainError and records nothing."""
    order = Order("order-1", "customer-1")
    with pytest.raises(EmptyOrderError, match="no lines") as caught:
        order.place()
    assert isinstance(caught.value, DomainError)
    assert order.pending_events == ()
    assert order.status is OrderStatus.DRAFT


def test_placing_an_order_twice_raises_order_already_placed_error() -> None:
    """The second place() is refused with a DomainError and records no second event."""
    order = Order("order-1", "customer-1")
    order.add_line("book", 1, 1500)
    order.place()
    with pytest.raises(OrderAlreadyPlacedError, match="already") as caught:
        order.place()
    assert isinstance(caught.value, DomainError)
    assert len(order.pending_events) == 1


def test_placing_an_order_records_one_order_placed_with_its_total_and_lines() -> None:
    """place() records exactly one OrderPlaced carrying the customer, total and lines."""
    order = Order("order-1", "customer-1")
    order.add_line("book", 2, 1500)
    order.add_line("pen", 3, 120)
    order.place()
    events = order.pending_events
    assert len(events) == 1
    placed = events[0]
    assert isinstance(placed, OrderPlaced)
    assert placed.customer_id == "customer-1"
    assert placed.total_cents == 2 * 1500 + 3 * 120
    assert placed.lines == (
        OrderLine(sku="book", quantity=2, unit_price_cents=1500),
        OrderLine(sku="pen", quantity=3, unit_price_cents=120),
    )
    assert (placed.aggregate_id, placed.aggregate_version) == ("order-1", 1)
    assert order.status is OrderStatus.PLACED


def imported_modules(source: Path) -> list[tuple[str, int]]:
    """The (module, relative level) of every import statement in a Python file."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def is_allowed_in_domain(module: str, level: int) -> bool:
    """True for the standard library, tidings.domain itself, and imports within the package."""
    if level:
        return level == 1
    if module == "tidings.domain" or module.startswith("tidings.domain."):
        return True
    return module.split(".", maxsplit=1)[0] in sys.stdlib_module_names


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    """No module of tidings.domain imports anything but the stdlib and tidings.domain."""
    package = Path(tidings.domain.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert {path.name for path in sources} >= {"aggregate.py", "events.py", "ids.py"}
    outside = [
        f"{path.name}: {module or '.' * level}"
        for path in sources
        for module, level in imported_modules(path)
        if not is_allowed_in_domain(module, level)
    ]
    assert outside == []

"""The per-event fast paths (tidings.domain._fast) build exactly what the plain idiom
builds: equal, hashed, printed, copied and pickled alike, and still frozen; a class they
cannot serve is refused at once, with the reason."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tidings.domain._fast import (
    dict_reader,
    fields_in_dict,
    frozen_builder,
    set_envelope,
    slot_setter,
    with_envelope,
)
from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.ports import OutboxEntry, OutgoingMessage, new_entry
from tidings.records import EventRecord, new_record
from tidings.serialization.cloudevents import to_message

WHEN = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
ENVELOPE = {
    "event_id": "e-1",
    "occurred_at": WHEN,
    "aggregate_id": "a-1",
    "aggregate_version": 3,
}


@dataclass(frozen=True, kw_only=True)
class Deposited(DomainEvent):
    """A plain event: its fields live in __dict__."""

    amount: int
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class SlottedDeposited(DomainEvent):
    """An event declared with slots: its own fields live outside __dict__."""

    amount: int


@dataclass(frozen=True, kw_only=True)
class Refund(Deposited):
    """A subclass of an event, with a field of its own."""

    reason: str


def envelope_of(event: DomainEvent) -> dict[str, object]:
    """The four envelope fields as the event reads them (``stamped`` uses these fast paths
    too, so equality with it alone would not show a field left out)."""
    return {name: getattr(event, name) for name in ENVELOPE}


@pytest.mark.parametrize("event", [Deposited(amount=5, note="n"), Refund(amount=5, reason="r")])
def test_with_envelope_builds_what_stamped_builds(event: Deposited) -> None:
    """The copy is equal to the plain ``stamped`` copy, of the same class, hashed, printed,
    copied and pickled alike, and frozen; the original is left unstamped."""
    fast = with_envelope(event, **ENVELOPE)
    plain = event.stamped(**ENVELOPE)
    assert type(fast) is type(event)
    assert envelope_of(fast) == ENVELOPE
    assert fast.payload() == event.payload()
    assert fast == plain
    assert hash(fast) == hash(plain)
    assert repr(fast) == repr(plain)
    assert copy.copy(fast) == plain
    assert copy.deepcopy(fast) == plain
    assert pickle.loads(pickle.dumps(fast)) == plain  # noqa: S301 - our own bytes
    assert dataclasses.replace(fast, amount=6) == dataclasses.replace(plain, amount=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.amount = 1  # type: ignore[misc]
    assert event.event_id == ""
    assert fast.__dict__ is not event.__dict__


def test_with_envelope_takes_the_plain_way_for_a_class_with_slots() -> None:
    """An event whose fields live in slots is copied through ``stamped``, not ``__dict__``."""
    event = SlottedDeposited(amount=5)
    fast = with_envelope(event, **ENVELOPE)
    assert fast == event.stamped(**ENVELOPE)
    assert envelope_of(fast) == ENVELOPE
    assert fast.amount == 5
    assert not fields_in_dict(SlottedDeposited)
    assert fields_in_dict(Deposited)
    assert fields_in_dict(Refund)


def test_an_aggregate_records_the_same_event_the_plain_way_would() -> None:
    """``Aggregate.record`` (which uses ``with_envelope``) gives the plain stamped copy."""
    aggregate = Aggregate("a-1", version=2, clock=lambda: WHEN, ids=lambda: "e-1")
    recorded = aggregate.record(Deposited(amount=5))
    assert recorded == Deposited(amount=5).stamped(**ENVELOPE)
    assert envelope_of(recorded) == ENVELOPE
    assert aggregate.pending_events == (recorded,)


@pytest.mark.parametrize("cls", [Deposited, SlottedDeposited])
def test_set_envelope_sets_the_four_fields_in_place(cls: type[Deposited]) -> None:
    """In place, on both layouts, and the event stays frozen to everyone after."""
    event = cls(amount=5)
    set_envelope(event, **ENVELOPE)
    assert envelope_of(event) == ENVELOPE
    assert event == cls(amount=5).stamped(**ENVELOPE)
    assert hash(event) == hash(cls(amount=5).stamped(**ENVELOPE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_id = "other"  # type: ignore[misc]


FIELDS = ("evt-1", "order-1", 3, "OrderPlaced", 2, WHEN, b'{"a":1}', b'{"m":2}', 17)


def test_a_built_record_is_the_record_the_dataclass_builds() -> None:
    """Same class, equal, same hash and repr, copied and pickled alike, and frozen."""
    fast, plain = new_record(*FIELDS), EventRecord(*FIELDS)
    assert type(fast) is EventRecord
    assert fast == plain
    assert hash(fast) == hash(plain)
    assert repr(fast) == repr(plain)
    assert copy.copy(fast) == plain
    assert copy.deepcopy(fast) == plain
    assert pickle.loads(pickle.dumps(fast)) == plain  # noqa: S301 - our own bytes
    assert dataclasses.replace(fast, position=1) == dataclasses.replace(plain, position=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.position = 1  # type: ignore[misc]
    assert not hasattr(fast, "__dict__")


def test_the_claim_and_the_encoder_build_what_their_dataclasses_build() -> None:
    """OutboxEntry (every claimed row) and OutgoingMessage (every published event): same
    class, equal, hashed alike where hashable, frozen."""
    record = new_record(*FIELDS)
    assert new_entry(record, 3, 1) == OutboxEntry(record, 3, 1)
    assert type(new_entry(record, 3, 1)) is OutboxEntry
    assert hash(new_entry(record, 3, 1)) == hash(OutboxEntry(record, 3, 1))
    built = to_message(record, "shop")
    assert type(built) is OutgoingMessage
    assert built == OutgoingMessage(built.message_id, "OrderPlaced", "order-1", built.body, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.body = b""  # type: ignore[misc]


def test_a_new_field_is_taken_up_by_the_builder() -> None:
    """The builder is made from the class's fields: a class with one more field gets a
    builder that takes it, in order, with nothing else to change."""

    @dataclass(frozen=True, slots=True)
    class Row:
        a: int
        b: str
        c: bytes = b""

    build = frozen_builder(Row)
    assert build(1, "x", b"y") == Row(1, "x", b"y")
    with pytest.raises(TypeError):
        build(1, "x")  # every field is given: no defaults on this path


def test_the_builder_refuses_a_class_it_cannot_serve_and_says_why() -> None:
    """Not frozen, no slots, a subclass, a __post_init__: each refused with its reason."""

    @dataclass(slots=True)
    class Unfrozen:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Child(Base):
        b: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must not be negative")

    with pytest.raises(TypeError, match="frozen dataclass"):
        frozen_builder(Unfrozen)
    with pytest.raises(TypeError, match="slots=True"):
        frozen_builder(NoSlots)
    with pytest.raises(TypeError, match="slots=True|inherits"):
        frozen_builder(Child)
    with pytest.raises(TypeError, match="__post_init__"):
        frozen_builder(Checked)
    with pytest.raises(TypeError, match="frozen dataclass"):
        frozen_builder(int)


def test_a_slot_setter_sets_one_field_of_a_record_nobody_holds_yet() -> None:
    """``place``'s setter: the position changes, nothing else, and the record stays frozen
    (a field that is not a slot is refused)."""
    record = new_record(*FIELDS[:-1], 0)
    slot_setter(EventRecord, "position")(record, 42)
    assert record == EventRecord(*FIELDS[:-1], 42)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.position = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="not a slot"):
        slot_setter(EventRecord, "describe")
    with pytest.raises(TypeError, match="not a slot"):
        slot_setter(Deposited, "amount")


def test_a_dict_reader_reads_the_named_fields_and_nothing_else() -> None:
    """The payload reader gives the named fields of ``__dict__``, in order; a name that is
    no identifier is only ever a string literal in its source."""
    event = Deposited(amount=5, note="n")
    assert dict_reader(("amount", "note"))(event) == {"amount": 5, "note": "n"}
    odd = type("Odd", (), {})()
    odd.__dict__["a'] or __import__('os') or d['"] = 1
    assert dict_reader(("a'] or __import__('os') or d['",))(odd) == {
        "a'] or __import__('os') or d['": 1
    }
    with pytest.raises(KeyError):
        dict_reader(("missing",))(event)

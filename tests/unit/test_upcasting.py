"""Upcasters and renames: old records read as today's classes, and every refusal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings import (
    ConfigurationError,
    DecodeError,
    DomainEvent,
    EventRecord,
    EventRegistry,
    JsonCodec,
    UnknownEventTypeError,
)

WHEN = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class ItemAdded(DomainEvent):
    """Version 3. v1 had ``price`` as a euro string; v2 ``unit_price_cents``; v3 added the
    currency."""

    schema_version = 3

    sku: str
    quantity: int
    unit_price_cents: int
    currency: str


def cents_from_price(v1: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: the euro string becomes whole cents."""
    euros, _, cents = v1.pop("price").partition(".")
    return {**v1, "unit_price_cents": int(euros) * 100 + int(cents or 0)}


def with_currency(v2: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v3: everything before v3 was in euros."""
    return {**v2, "currency": "EUR"}


def make_codec(**options: Any) -> JsonCodec:
    """A codec for ItemAdded with both upcasters, plus ``options`` for the registry."""
    upcasters = {("ItemAdded", 1): cents_from_price, ("ItemAdded", 2): with_currency}
    return JsonCodec(EventRegistry([ItemAdded], upcasters=upcasters, **options))


def stored(data: dict[str, Any], version: int, event_type: str = "ItemAdded") -> EventRecord:
    """A record as older code would have stored it."""
    return EventRecord(
        event_id="e-1",
        stream_id="order-1",
        version=4,
        event_type=event_type,
        schema_version=version,
        occurred_at=WHEN,
        data=json.dumps(data).encode(),
        position=9,
    )


V1 = {"sku": "BOOK-42", "quantity": 2, "price": "19.50"}


def test_a_v1_record_is_read_by_v3_code_through_two_chained_upcasters() -> None:
    """price "19.50" -> 1950 cents -> EUR: the event arrives as today's class, envelope kept."""
    event = make_codec().decode(stored(V1, 1))
    assert event == ItemAdded(
        sku="BOOK-42", quantity=2, unit_price_cents=1950, currency="EUR"
    ).stamped(event_id="e-1", occurred_at=WHEN, aggregate_id="order-1", aggregate_version=4)


def test_a_v2_record_takes_only_the_upcasters_it_needs() -> None:
    """From version 2 only the second step runs (the first would fail on a v2 payload)."""
    v2 = {"sku": "MUG-7", "quantity": 1, "unit_price_cents": 1350}
    event = make_codec().decode(stored(v2, 2))
    assert (event.unit_price_cents, event.currency) == (1350, "EUR")  # type: ignore[attr-defined]


def test_a_current_record_never_reaches_an_upcaster() -> None:
    """Records at the class's version are decoded straight; no upcaster is called."""

    def explode(document: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("an upcaster ran on a current record")

    codec = JsonCodec(EventRegistry([ItemAdded], upcasters={("ItemAdded", 2): explode}))
    v3 = {"sku": "A", "quantity": 1, "unit_price_cents": 5, "currency": "SEK"}
    assert codec.decode(stored(v3, 3)).currency == "SEK"  # type: ignore[attr-defined]


def test_a_renamed_type_reads_old_records_as_the_new_class() -> None:
    """Records stored as 'LineAdded' v1 come back as ItemAdded v3; new ones are stored
    under the new name; the old name is not listed as a current type."""
    codec = make_codec(renames={"LineAdded": ItemAdded})
    event = codec.decode(stored(V1, 1, event_type="LineAdded"))
    assert isinstance(event, ItemAdded)
    assert event.unit_price_cents == 1950
    assert codec.encode(event).event_type == "ItemAdded"
    assert codec.registry.names() == ["ItemAdded"]
    assert "LineAdded" in codec.registry


def test_a_missing_step_in_the_chain_names_the_versions_and_the_record() -> None:
    """Only v2 -> v3 registered: a v1 record says which step is missing, and where."""
    codec = JsonCodec(EventRegistry([ItemAdded], upcasters={("ItemAdded", 2): with_currency}))
    with pytest.raises(DecodeError) as caught:
        codec.decode(stored(V1, 1), "sqlite:///shop.db")
    message = str(caught.value)
    for part in ("from version 1 to 2", "'order-1' version 4", "position 9", "shop.db"):
        assert part in message


def test_an_upcaster_that_fails_is_reported_with_the_record() -> None:
    """A KeyError inside the user's upcaster becomes a DecodeError, the cause chained."""
    broken = {"sku": "BOOK-42", "quantity": 2}  # no price
    with pytest.raises(DecodeError, match=r"upcaster of ItemAdded from version 1 failed") as c:
        make_codec().decode(stored(broken, 1))
    assert isinstance(c.value.__cause__, KeyError)


def test_an_upcaster_must_return_a_dict() -> None:
    """Returning something else is refused, not passed on to msgspec."""
    registry = EventRegistry([ItemAdded])
    registry.add_upcaster("ItemAdded", 1, lambda d: [d])  # type: ignore[arg-type,return-value]
    registry.add_upcaster("ItemAdded", 2, with_currency)
    with pytest.raises(DecodeError, match="returned list, not a dict"):
        JsonCodec(registry).decode(stored(V1, 1))


def test_an_upcast_result_that_does_not_fit_the_class_names_the_field() -> None:
    """An upcaster that forgets a field: the class's validation says which."""
    codec = JsonCodec(
        EventRegistry(
            [ItemAdded],
            upcasters={("ItemAdded", 1): lambda d: d, ("ItemAdded", 2): with_currency},
        )
    )
    with pytest.raises(DecodeError, match="unit_price_cents"):
        codec.decode(stored(V1, 1))


@pytest.mark.parametrize(
    ("data", "reason"), [(b"[1, 2]", "not a JSON object"), (b"{oops", "not valid JSON")]
)
def test_an_old_payload_that_is_not_a_json_object_is_refused(data: bytes, reason: str) -> None:
    """Upcasters get a dict or nothing: broken or non-object JSON is a DecodeError."""
    record = EventRecord("e", "s", 1, "ItemAdded", 1, WHEN, data)
    with pytest.raises(DecodeError, match=reason):
        make_codec().decode(record)


def test_a_version_newer_than_the_code_is_still_refused() -> None:
    """Upcasters go forward only: a v4 record asks for newer code."""
    with pytest.raises(UnknownEventTypeError, match="version 4.*newer code"):
        make_codec().decode(stored(V1, 4))


@pytest.mark.parametrize(
    ("event_type", "from_version", "reason"),
    [
        ("Nope", 1, "register its class first"),
        ("ItemAdded", 0, "from versions 1 to 2, not 0"),
        ("ItemAdded", 3, "from versions 1 to 2, not 3"),
        ("ItemAdded", 1, "already has an upcaster from version 1"),
    ],
)
def test_upcasters_that_cannot_work_are_refused_when_registered(
    event_type: str, from_version: int, reason: str
) -> None:
    """Unknown type, a version outside 1..current-1, or a second one for the same step."""
    registry = make_codec().registry
    with pytest.raises(ConfigurationError, match=reason):
        registry.add_upcaster(event_type, from_version, with_currency)


def test_renames_that_would_make_a_name_ambiguous_are_refused() -> None:
    """An old name cannot be a current name, another class's old name, or the same name;
    and a new class cannot take a name that is already an old one."""

    @dataclass(frozen=True, kw_only=True)
    class LineAdded(DomainEvent):
        """A different class that claims the old name."""

    registry = EventRegistry([ItemAdded], renames={"OrderLineAdded": ItemAdded})
    with pytest.raises(ConfigurationError, match=r"is already the name of .*LineAdded"):
        EventRegistry([ItemAdded, LineAdded], renames={"LineAdded": ItemAdded})
    with pytest.raises(ConfigurationError, match="already an old name of ItemAdded"):
        registry.rename("OrderLineAdded", LineAdded)
    with pytest.raises(ConfigurationError, match="current name of ItemAdded"):
        registry.rename("ItemAdded", ItemAdded)

    @dataclass(frozen=True, kw_only=True)
    class OrderLineAdded(DomainEvent):
        """A new class whose name is ItemAdded's old one."""

    with pytest.raises(ConfigurationError, match="is an old name of ItemAdded"):
        registry.register(OrderLineAdded)
    registry.rename("OrderLineAdded", ItemAdded)  # saying it again changes nothing

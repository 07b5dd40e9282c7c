"""JsonCodec and EventRegistry: events to stored records and back, and every refusal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import (
    ConfigurationError,
    DecodeError,
    DomainEvent,
    EventRecord,
    EventRegistry,
    JsonCodec,
    SerializationError,
    UnknownEventTypeError,
)
from tidings.domain.events import ENVELOPE_FIELDS
from tidings.examples.shop.orders import SHOP_EVENTS, OrderPlaced
from tidings.records import FreshRecords
from tidings.serialization.cloudevents import from_message, to_message

WHEN = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
SOURCE = "sqlite:///shop.db"


@dataclass(frozen=True, kw_only=True)
class Part:
    """A nested frozen value: one part of an assembly."""

    name: str
    count: int


@dataclass(frozen=True, kw_only=True)
class Assembly:
    """A nested frozen value holding a tuple of further nested values."""

    label: str
    parts: tuple[Part, ...]


@dataclass(frozen=True, kw_only=True)
class Shipped(DomainEvent):
    """Everything the codec must carry: text, ints, money, times, nesting and optionals."""

    note: str
    count: int
    amount: Decimal
    at: datetime
    assemblies: tuple[Assembly, ...]
    carrier: str | None = None
    tracking: int | None = None


@dataclass(frozen=True, kw_only=True)
class Renamed(DomainEvent):
    """An event at schema version 2, with no upcaster for version 1."""

    schema_version = 2

    name: str


@dataclass(frozen=True, kw_only=True)
class Odd(DomainEvent):
    """An event whose payload field can hold values JSON cannot carry."""

    thing: object


@dataclass(frozen=True, kw_only=True)
class NamedPlaced(DomainEvent):
    """An event stored under an explicit type name instead of its class name."""

    event_type = "orders.placed"

    order_id: str


@dataclass(frozen=True, kw_only=True)
class OtherPlaced(DomainEvent):
    """A different class that claims the same stored type name as NamedPlaced."""

    event_type = "orders.placed"

    reference: str


@dataclass(frozen=True, kw_only=True)
class Unregistered(DomainEvent):
    """An event class no registry in these tests knows."""

    value: int


@dataclass(frozen=True, kw_only=True)
class RedefinesEnvelope(DomainEvent):
    """An event that changes the type of an envelope field."""

    event_id: int = 0  # type: ignore[assignment]


@dataclass
class PlainRecord:
    """A mutable dataclass that is no DomainEvent at all."""

    value: int


def make_codec(*classes: type[DomainEvent]) -> JsonCodec:
    """A codec over a fresh registry of ``classes``."""
    return JsonCodec(EventRegistry(classes))


MISFIT = b'{"customer_id":"c-1","total_cents":"1500","lines":[]}'
"""An OrderPlaced payload whose total is text, not an int."""


def record_of(data: bytes, **changes: Any) -> EventRecord:
    """A stored OrderPlaced record with ``data`` as payload, other fields overridable."""
    fields: dict[str, Any] = {
        "event_id": "evt-0001",
        "stream_id": "order-7",
        "version": 1,
        "event_type": "OrderPlaced",
        "schema_version": 1,
        "occurred_at": WHEN,
        "data": data,
        "position": 1,
    }
    fields.update(changes)
    return EventRecord(**fields)


def stamped_order_placed() -> OrderPlaced:
    """An OrderPlaced with its envelope set, as an aggregate would leave it."""
    return OrderPlaced(customer_id="c-1", total_cents=1500, lines=()).stamped(
        event_id="evt-0001", occurred_at=WHEN, aggregate_id="order-7", aggregate_version=1
    )


def exact_in_rfc3339(moment: datetime) -> bool:
    """True when JSON's RFC 3339 text can hold the moment: whole-minute offset, not ambiguous."""
    offset = moment.utcoffset()
    if offset is None or offset % timedelta(minutes=1):
        return False
    return moment.replace(fold=1 - moment.fold).utcoffset() == offset


minute_offsets = st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1975, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.just(UTC), minute_offsets, st.timezones()),
    allow_imaginary=False,
).filter(exact_in_rfc3339)
parts = st.builds(Part, name=st.text(), count=st.integers())
assemblies = st.builds(Assembly, label=st.text(), parts=st.lists(parts, max_size=3).map(tuple))
shipped_events = st.builds(
    lambda event, **envelope: event.stamped(**envelope),
    st.builds(
        Shipped,
        note=st.text(),
        count=st.integers(),
        amount=st.decimals(allow_nan=False),
        at=aware_datetimes,
        assemblies=st.lists(assemblies, max_size=3).map(tuple),
        carrier=st.none() | st.text(),
        tracking=st.none() | st.integers(),
    ),
    event_id=st.text(min_size=1),
    occurred_at=aware_datetimes,
    aggregate_id=st.text(min_size=1),
    aggregate_version=st.integers(min_value=1, max_value=2**31),
)


@settings(max_examples=200)
@given(event=shipped_events)
def test_encoding_then_decoding_gives_back_an_equal_event(event: Shipped) -> None:
    """Any payload of the supported types, and the envelope, survive a round trip."""
    codec = make_codec(Shipped)
    record = codec.encode(event)
    decoded = codec.decode(record, SOURCE)
    assert decoded == event
    assert type(decoded) is Shipped


def test_a_recorded_order_survives_a_round_trip_with_its_envelope() -> None:
    """The record carries the envelope, and decoding restores it exactly."""
    codec = make_codec(*SHOP_EVENTS)
    event = stamped_order_placed()
    record = codec.encode(event, metadata=b'{"user":"ada"}')
    assert (record.event_id, record.stream_id, record.version) == ("evt-0001", "order-7", 1)
    assert (record.event_type, record.schema_version) == ("OrderPlaced", 1)
    assert record.occurred_at == WHEN
    assert record.metadata == b'{"user":"ada"}'
    assert codec.decode(record) == event


@settings(max_examples=50)
@given(event=shipped_events)
def test_the_stored_data_holds_only_the_payload_fields(event: Shipped) -> None:
    """The JSON document has exactly the payload's keys and none of the envelope's."""
    record = make_codec(Shipped).encode(event)
    stored = json.loads(record.data)
    assert set(stored) == set(Shipped.payload_fields())
    assert not set(stored) & ENVELOPE_FIELDS


def test_a_wrong_field_type_names_the_class_the_field_and_the_record() -> None:
    """The DecodeError says which class, which JSON path, which event, stream and source."""
    codec = make_codec(*SHOP_EVENTS)
    record = record_of(b'{"customer_id":"c-1","total_cents":"1500","lines":[]}')
    with pytest.raises(DecodeError) as caught:
        codec.decode(record, SOURCE)
    message = str(caught.value)
    assert "OrderPlaced" in message
    assert "$.total_cents" in message
    assert "evt-0001" in message
    assert "'order-7'" in message
    assert SOURCE in message


def test_a_wrong_field_type_in_a_stored_row_says_the_row_may_be_corrupt() -> None:
    """A stored record (it has a position) that does not fit: upcaster or corrupt row."""
    codec = make_codec(*SHOP_EVENTS)
    with pytest.raises(DecodeError) as caught:
        codec.decode(record_of(MISFIT), SOURCE)
    message = str(caught.value)
    assert message.startswith("stored payload does not fit OrderPlaced")
    assert "otherwise the stored row is corrupt" in message
    assert "message" not in message


def test_a_wrong_field_type_in_a_received_message_blames_the_message_not_a_stored_row() -> None:
    """A record read from a broker message (no position) that does not fit its class: the
    reason says it is the received message's data and the sender's event, never a row."""
    codec = make_codec(*SHOP_EVENTS)
    body = to_message(record_of(MISFIT, position=0), "orders").body
    with pytest.raises(DecodeError) as caught:
        codec.decode(from_message(body), SOURCE)
    message = str(caught.value)
    assert message.startswith("the received message's data does not fit OrderPlaced")
    assert "$.total_cents" in message
    assert f"from a broker message received by {SOURCE}" in message
    assert "otherwise the sender published a malformed event" in message
    assert "row" not in message
    with pytest.raises(DecodeError, match="^the received message's data does not fit"):
        codec.decode(record_of(MISFIT), SOURCE, received=True)


def test_a_leap_second_in_a_datetime_field_is_named_as_a_leap_second() -> None:
    """23:59:60Z is valid RFC 3339 that a datetime cannot hold: the reason says so and
    names the field, rather than calling it invalid RFC 3339."""
    codec = make_codec(Shipped)
    data = b'{"note":"n","count":1,"amount":"1.5","at":"2016-12-31T23:59:60Z","assemblies":[]}'
    with pytest.raises(DecodeError) as caught:
        codec.decode(record_of(data, event_type="Shipped"), SOURCE)
    message = str(caught.value)
    assert "$.at is '2016-12-31T23:59:60Z', a leap second" in message
    assert "cannot represent second 60" in message


def test_an_unpaired_surrogate_escape_in_a_payload_names_the_escape_and_the_field() -> None:
    """A lone \\ud800 is not Unicode text: the reason says so, with its field and byte."""
    codec = make_codec(*SHOP_EVENTS)
    data = b'{"customer_id":"c-\\ud800","total_cents":1,"lines":[]}'
    with pytest.raises(DecodeError) as caught:
        codec.decode(record_of(data), SOURCE)
    message = str(caught.value)
    assert message.startswith("stored payload is not valid JSON: the JSON holds an unpaired")
    assert "surrogate escape \\ud800 in $.customer_id (byte 18)" in message


def test_a_wrong_type_deep_in_a_nested_value_names_its_json_path() -> None:
    """A bad field inside a tuple of nested dataclasses is reported by its full path."""
    codec = make_codec(*SHOP_EVENTS)
    line = b'{"sku":"book","quantity":"two","unit_price_cents":1500}'
    record = record_of(b'{"customer_id":"c-1","total_cents":1500,"lines":[' + line + b"]}")
    with pytest.raises(DecodeError, match=r"\$\.lines\[0\]\.quantity"):
        codec.decode(record, SOURCE)


def test_invalid_json_raises_decode_error_saying_it_is_not_valid_json() -> None:
    """Bytes that are not JSON are reported as such, with the record they came from."""
    codec = make_codec(*SHOP_EVENTS)
    with pytest.raises(DecodeError, match="not valid JSON") as caught:
        codec.decode(record_of(b'{"customer_id": '), SOURCE)
    assert "evt-0001" in str(caught.value)
    assert SOURCE in str(caught.value)


def test_an_unknown_event_type_names_the_type_and_lists_the_known_ones() -> None:
    """UnknownEventTypeError names the stored type and every registered one."""
    codec = make_codec(*SHOP_EVENTS)
    with pytest.raises(UnknownEventTypeError) as caught:
        codec.decode(record_of(b"{}", event_type="OrderShipped"))
    message = str(caught.value)
    assert "'OrderShipped'" in message
    assert "known types: OrderCancelled, OrderPlaced" in message
    assert "registry.register" in message
    assert isinstance(caught.value, SerializationError)


def test_an_empty_registry_says_it_knows_no_types() -> None:
    """With nothing registered the message lists the known types as none."""
    with pytest.raises(UnknownEventTypeError, match=r"known types: none"):
        make_codec().decode(record_of(b"{}"))


def test_a_schema_version_newer_than_the_class_says_to_run_newer_code() -> None:
    """A record from a later schema version is refused, never guessed at."""
    codec = make_codec(*SHOP_EVENTS)
    record = record_of(b'{"customer_id":"c-1","total_cents":1,"lines":[]}', schema_version=2)
    with pytest.raises(UnknownEventTypeError, match="run the newer code"):
        codec.decode(record)


@pytest.mark.parametrize("schema_version", [0, -1])
def test_a_schema_version_below_one_is_refused(schema_version: int) -> None:
    """Schema versions start at 1; a record claiming 0 or less is refused."""
    codec = make_codec(*SHOP_EVENTS)
    record = record_of(b"{}", schema_version=schema_version)
    with pytest.raises(UnknownEventTypeError, match="versions start at 1"):
        codec.decode(record)


def test_a_schema_version_older_than_the_class_without_upcaster_raises_decode_error() -> None:
    """An old record of a class now at version 2 is refused until an upcaster exists."""
    codec = make_codec(Renamed)
    record = record_of(b'{"name":"x"}', event_type="Renamed", schema_version=1)
    with pytest.raises(DecodeError, match="no upcaster") as caught:
        codec.decode(record)
    assert "schema version 1" in str(caught.value)
    assert "Renamed is version 2" in str(caught.value)


def test_encoding_an_unregistered_class_says_to_call_registry_register() -> None:
    """ConfigurationError names the class and the call that fixes it."""
    codec = make_codec(*SHOP_EVENTS)
    event = Unregistered(value=1).stamped(event_id="evt-1", aggregate_id="s-1", aggregate_version=1)
    with pytest.raises(ConfigurationError, match=r"registry\.register\(Unregistered\)"):
        codec.encode(event)


def test_encoding_an_unstamped_event_raises_serialization_error() -> None:
    """An event no aggregate has recorded has no id, so it cannot be stored."""
    codec = make_codec(*SHOP_EVENTS)
    event = OrderPlaced(customer_id="c-1", total_cents=1, lines=())
    with pytest.raises(SerializationError, match=r"aggregate\.record"):
        codec.encode(event)


@pytest.mark.parametrize(
    "thing",
    [{object()}, object(), [1, object()]],
    ids=["set-of-objects", "object", "list-holding-an-object"],
)
def test_a_field_json_cannot_hold_raises_serialization_error(thing: object) -> None:
    """Values msgspec cannot encode are reported as SerializationError naming the event."""
    codec = make_codec(Odd)
    event = Odd(thing=thing).stamped(event_id="evt-9", aggregate_id="s-1", aggregate_version=1)
    with pytest.raises(SerializationError, match="cannot encode Odd evt-9") as caught:
        codec.encode(event)
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize(
    "candidate",
    [PlainRecord, Part, int, "OrderPlaced"],
    ids=["mutable-dataclass", "frozen-dataclass", "builtin", "a-string"],
)
def test_the_registry_refuses_what_is_not_a_domain_event_class(candidate: Any) -> None:
    """Only DomainEvent subclasses can be registered."""
    with pytest.raises(ConfigurationError, match="not a DomainEvent subclass"):
        EventRegistry().register(candidate)


def test_python_itself_refuses_a_non_frozen_dataclass_event() -> None:
    """A mutable dataclass cannot even be declared on top of the frozen DomainEvent."""
    with pytest.raises(TypeError, match="frozen"):

        @dataclass(kw_only=True)
        class Mutable(DomainEvent):
            """Would be a mutable event."""

            value: int


def test_the_registry_refuses_an_event_class_whose_dataclass_is_not_frozen() -> None:
    """A class whose dataclass parameters say not frozen is refused with the fix to apply."""

    @dataclass(frozen=True, kw_only=True)
    class Loose(DomainEvent):
        """An event whose dataclass parameters are swapped for mutable ones below."""

        value: int

    # Python will not build such a class by decoration, so take real mutable parameters.
    Loose.__dataclass_params__ = PlainRecord.__dataclass_params__  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"@dataclass\(frozen=True, kw_only=True\)"):
        EventRegistry().register(Loose)


def test_the_registry_refuses_a_subclass_that_is_not_itself_a_dataclass() -> None:
    """Inheriting the dataclass of another event is not enough to be an event class."""

    class Undecorated(OrderPlaced):
        """A subclass someone forgot to decorate."""

    with pytest.raises(ConfigurationError, match="inherits a dataclass but is not one itself"):
        EventRegistry().register(Undecorated)


def test_the_registry_refuses_a_class_that_redefines_an_envelope_field() -> None:
    """Changing the type of event_id is refused, naming the field."""
    with pytest.raises(ConfigurationError, match="must not redefine 'event_id'"):
        EventRegistry().register(RedefinesEnvelope)


def test_the_registry_refuses_two_classes_with_the_same_type_name() -> None:
    """A second class under a taken type name is refused, and the first keeps the name."""
    registry = EventRegistry([NamedPlaced])
    with pytest.raises(ConfigurationError, match="already registered to NamedPlaced") as caught:
        registry.register(OtherPlaced)
    assert "OtherPlaced" in str(caught.value)
    assert registry.resolve("orders.placed", 1) is NamedPlaced


def test_registering_the_same_class_again_is_fine() -> None:
    """Registering a class twice, or listing it twice, changes nothing."""
    registry = EventRegistry([OrderPlaced, OrderPlaced])
    registry.register(OrderPlaced)
    assert registry.names() == ["OrderPlaced"]
    assert registry.resolve("OrderPlaced", 1) is OrderPlaced


def test_a_class_with_an_event_type_is_stored_under_that_name() -> None:
    """``event_type = "orders.placed"`` is the name registered, stored and resolved."""
    registry = EventRegistry([NamedPlaced])
    assert registry.names() == ["orders.placed"]
    assert "orders.placed" in registry
    assert "NamedPlaced" not in registry
    codec = JsonCodec(registry)
    event = NamedPlaced(order_id="o-1").stamped(
        event_id="evt-1", aggregate_id="o-1", aggregate_version=1
    )
    record = codec.encode(event)
    assert record.event_type == "orders.placed"
    assert codec.decode(record) == event


decodable_names = st.sampled_from(["note", "count", "amount", "at", "assemblies", "carrier"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(decodable_names | st.text(max_size=5), children, max_size=6)
    ),
    max_leaves=30,
)
utf8_documents = st.one_of(
    st.text().map(str.encode),
    json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
)


def decodes_or_raises_decode_error(data: bytes) -> None:
    """Decode ``data`` as a Shipped payload: it must give the event or a DecodeError."""
    codec = make_codec(Shipped)
    record = record_of(data, event_type="Shipped")
    outcome: DomainEvent | DecodeError
    try:
        outcome = codec.decode(record, SOURCE)
    except DecodeError as error:
        outcome = error
    if isinstance(outcome, DecodeError):
        assert "evt-0001" in str(outcome)
    else:
        assert isinstance(outcome, Shipped)
        assert (outcome.event_id, outcome.aggregate_id) == ("evt-0001", "order-7")


@settings(max_examples=200)
@given(data=st.binary())
def test_arbitrary_bytes_as_data_give_decode_error_or_an_event(data: bytes) -> None:
    """Random bytes never raise anything but DecodeError (or decode, when they happen to fit)."""
    decodes_or_raises_decode_error(data)


@settings(max_examples=200)
@given(data=utf8_documents)
def test_arbitrary_json_documents_as_data_give_decode_error_or_an_event(data: bytes) -> None:
    """Random JSON documents (and text) never raise anything but DecodeError, or decode."""
    decodes_or_raises_decode_error(data)


def test_invalid_utf8_inside_a_string_field_gives_decode_error() -> None:
    """Corrupt bytes inside a JSON string are reported as a DecodeError naming the record."""
    codec = make_codec(*SHOP_EVENTS)
    with pytest.raises(DecodeError, match="evt-0001"):
        codec.decode(record_of(b'{"customer_id":"\xff","total_cents":1,"lines":[]}'))


def test_deeply_nested_json_in_data_gives_decode_error() -> None:
    """A document nested past the decoder's depth is reported as a DecodeError too."""
    codec = make_codec(*SHOP_EVENTS)
    depth = 10_000
    data = b'{"customer_id":"c","total_cents":1,"lines":[],"x":' + b"[" * depth + b"]" * depth
    with pytest.raises(DecodeError, match="evt-0001"):
        codec.decode(record_of(data + b"}"))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(seconds=37))),
        datetime(1850, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")),
    ],
    ids=["fixed-offset-with-seconds", "local-mean-time"],
)
def test_a_datetime_with_a_sub_minute_offset_keeps_its_instant(moment: datetime) -> None:
    """A payload datetime whose UTC offset has seconds decodes to the same instant."""
    codec = make_codec(Shipped)
    event = Shipped(note="", count=0, amount=Decimal(0), at=moment, assemblies=()).stamped(
        event_id="evt-1", occurred_at=WHEN, aggregate_id="s-1", aggregate_version=1
    )
    decoded = codec.decode(codec.encode(event))
    assert isinstance(decoded, Shipped)
    assert decoded.at == moment


@dataclass(frozen=True, kw_only=True)
class Rescheduled(DomainEvent):
    """Plain fields beside optional and loosely typed ones that can hold a datetime."""

    note: str | None = None
    count: int = 0
    at: datetime | None = None
    extra: Any = None


@pytest.mark.parametrize("field", ["at", "extra"])
def test_a_sub_minute_offset_keeps_its_instant_in_an_optional_or_any_field(field: str) -> None:
    """A field typed ``datetime | None`` or ``Any`` may hold a datetime, so its value is
    still looked at: an offset with seconds decodes to the same instant."""
    moment = datetime(2000, 1, 1, tzinfo=timezone(timedelta(seconds=37)))
    codec = make_codec(Rescheduled)
    event = Rescheduled(**{"note": "n", field: moment}).stamped(
        event_id="evt-1", occurred_at=WHEN, aggregate_id="r-1", aggregate_version=1
    )
    stored = json.loads(codec.encode(event).data)
    assert datetime.fromisoformat(stored[field]) == moment


def test_an_event_of_plain_fields_is_stored_with_exactly_its_values() -> None:
    """Text, numbers, money, UUIDs and optionals of them go into the payload as they are."""

    @dataclass(frozen=True, kw_only=True)
    class Priced(DomainEvent):
        sku: str
        quantity: int
        price: Decimal
        discount: float | None = None

    codec = make_codec(Priced)
    event = Priced(sku="A", quantity=2, price=Decimal("9.95"), discount=None).stamped(
        event_id="evt-2", aggregate_id="p-1", aggregate_version=1
    )
    assert json.loads(codec.encode(event).data) == {
        "sku": "A",
        "quantity": 2,
        "price": "9.95",
        "discount": None,
    }


def test_encoding_several_events_at_once_gives_the_records_one_by_one_would() -> None:
    """encode_all is encode for each event, in order, in a list of fresh records."""
    codec = make_codec(*SHOP_EVENTS)
    first = stamped_order_placed()
    second = replace(first, total_cents=99).stamped(
        event_id="evt-0002", occurred_at=WHEN, aggregate_id="order-7", aggregate_version=2
    )
    records = codec.encode_all([first, second], b'{"user":"ada"}')
    assert isinstance(records, FreshRecords)
    assert records == [codec.encode(e, b'{"user":"ada"}') for e in (first, second)]
    assert [r.version for r in records] == [1, 2]


def test_the_payload_is_written_in_the_order_the_class_declares_its_fields() -> None:
    """The stored text itself, not only the document it parses to: same bytes as ever."""

    @dataclass(frozen=True, kw_only=True)
    class Line(DomainEvent):
        sku: str
        quantity: int
        note: str | None = None

    event = Line(quantity=2, sku="A").stamped(
        event_id="evt-3", aggregate_id="l-1", aggregate_version=1
    )
    assert make_codec(Line).encode(event).data == b'{"sku":"A","quantity":2,"note":null}'


def test_a_payload_field_that_init_leaves_to_its_default_is_stored_and_read_back() -> None:
    """A field with init=False lives on the class until someone sets it: its value is
    stored all the same (it used to fail with a KeyError), and it survives a round trip."""

    @dataclass(frozen=True, kw_only=True)
    class Tagged(DomainEvent):
        sku: str
        tag: str = field(default="plain", init=False)

    codec = make_codec(Tagged)
    event = Tagged(sku="A").stamped(event_id="evt-4", aggregate_id="t-1", aggregate_version=1)
    record = codec.encode(event)
    assert json.loads(record.data) == {"sku": "A", "tag": "plain"}
    assert codec.decode(record) == event

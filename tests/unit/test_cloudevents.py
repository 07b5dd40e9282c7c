"""The wire format: CloudEvents 1.0 JSON out, strict validation in, and fuzzed bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import BadMessageError, EventRecord, SerializationError
from tidings.serialization import cloudevents
from tidings.serialization.cloudevents import (
    CONTENT_TYPE,
    from_message,
    routing_key,
    to_message,
)

WHEN = datetime(2025, 1, 15, 10, 0, 0, 250_000, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def record(**changes: Any) -> EventRecord:
    """An OrderPlaced record as a store hands it to the relay."""
    fields: dict[str, Any] = {
        "event_id": "0190f1a2-0000-7000-8000-000000000001",
        "stream_id": "order-42",
        "version": 3,
        "event_type": "order.placed",
        "schema_version": 2,
        "occurred_at": WHEN,
        "data": b'{"customer_id":"alice","total_cents":3900}',
        "metadata": b"{}",
    }
    fields.update(changes)
    return EventRecord(**fields)


def document(**changes: Any) -> dict[str, Any]:
    """The JSON document of ``record()`` on the wire, changed by ``changes``."""
    doc: dict[str, Any] = json.loads(to_message(record(), "orders").body)
    doc.update(changes)
    return {key: value for key, value in doc.items() if value is not ...}


def encode(doc: object) -> bytes:
    """A JSON body."""
    return json.dumps(doc).encode()


def test_a_message_carries_every_cloudevents_attribute_and_the_payload_as_json() -> None:
    """id, source, type, subject, time, datacontenttype, the extensions, and data as an object."""
    message = to_message(record(metadata=f'{{"traceparent":"{TRACEPARENT}"}}'.encode()), "orders")
    assert json.loads(message.body) == {
        "specversion": "1.0",
        "id": "0190f1a2-0000-7000-8000-000000000001",
        "source": "orders",
        "type": "order.placed",
        "subject": "order-42",
        "time": "2025-01-15T10:00:00.250000Z",
        "datacontenttype": "application/json",
        "schemaversion": 2,
        "aggregateversion": 3,
        "traceparent": TRACEPARENT,
        "data": {"customer_id": "alice", "total_cents": 3900},
    }
    assert (message.message_id, message.routing_key, message.ordering_key) == (
        "0190f1a2-0000-7000-8000-000000000001",
        "order.placed",
        "order-42",
    )


def test_a_message_has_no_trace_attributes_when_the_metadata_has_none() -> None:
    """traceparent appears only when there is one; other metadata stays off the wire."""
    doc = json.loads(to_message(record(metadata=b'{"user":"bob"}'), "orders").body)
    assert "traceparent" not in doc
    assert "user" not in doc


def test_tracestate_travels_beside_traceparent() -> None:
    """Both W3C trace context values go out as extension attributes and come back."""
    metadata = json.dumps({"traceparent": TRACEPARENT, "tracestate": "k=v"}).encode()
    back = from_message(to_message(record(metadata=metadata), "orders").body)
    assert json.loads(back.metadata) == {
        "source": "orders",
        "traceparent": TRACEPARENT,
        "tracestate": "k=v",
    }


def test_every_context_attribute_comes_back_as_the_metadata_it_was_made_from() -> None:
    """The trace context, the correlation and causation ids and the log position all go
    out as extension attributes and come back under their metadata keys."""
    metadata = {
        "traceparent": TRACEPARENT,
        "tracestate": "k=v",
        "correlation_id": "c-1",
        "causation_id": "m-7",
        "source_position": 12,
    }
    back = from_message(to_message(record(metadata=json.dumps(metadata).encode()), "o").body)
    assert json.loads(back.metadata) == {"source": "o", **metadata}


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "correlationid", "causationid"])
def test_a_control_character_in_any_context_attribute_is_named(name: str) -> None:
    """A control character in an extension attribute is refused, naming the attribute."""
    doc = json.loads(to_message(record(), "orders").body)
    doc[name] = "bad\x07value"
    with pytest.raises(BadMessageError, match=f"^{name} .*control character"):
        from_message(json.dumps(doc).encode())


def test_a_message_reads_back_as_the_record_it_was_made_from() -> None:
    """from_message(to_message(r)) has r's identity, place, type, time and payload."""
    back = from_message(to_message(record(), "orders").body)
    assert back == record(metadata=b'{"source":"orders"}')


def test_times_in_other_offsets_go_out_in_utc() -> None:
    """The wire time is RFC 3339 with 'Z'; the instant is unchanged."""
    local = WHEN.astimezone(timezone(timedelta(hours=5, minutes=30)))
    doc = json.loads(to_message(record(occurred_at=local), "orders").body)
    assert doc["time"] == "2025-01-15T10:00:00.250000Z"


def test_the_official_sdk_reads_what_we_write() -> None:
    """Both the SDK's core JSON format and its v1 http reader parse our message."""
    body = to_message(record(metadata=f'{{"traceparent":"{TRACEPARENT}"}}'.encode()), "o").body
    event = JSONFormat().read(None, body)
    assert event.get_id() == record().event_id
    assert event.get_subject() == "order-42"
    assert event.get_time() == WHEN
    assert event.get_extension("schemaversion") == 2
    assert event.get_extension("traceparent") == TRACEPARENT
    assert event.get_data() == {"customer_id": "alice", "total_cents": 3900}
    legacy = from_json(body)
    assert (legacy["type"], legacy["aggregateversion"]) == ("order.placed", 3)
    assert CONTENT_TYPE == JSONFormat.CONTENT_TYPE


def test_a_record_without_a_time_zone_or_a_source_cannot_be_sent() -> None:
    """Naive times and an empty source are refused with what to do."""
    with pytest.raises(SerializationError, match="no time zone"):
        to_message(record(occurred_at=datetime(2025, 1, 1)), "orders")
    with pytest.raises(SerializationError, match="needs a source"):
        to_message(record(), "")


def test_metadata_that_is_not_a_json_object_is_a_serialization_error() -> None:
    """A damaged metadata column is named, not a crash deep in the relay."""
    with pytest.raises(SerializationError, match="metadata"):
        to_message(record(metadata=b'["traceparent"'), "orders")


@pytest.mark.parametrize(
    "event_type", ["OrderPlaced", "order.placed", "billing.v2.invoice-paid", "a:b_c"]
)
def test_event_types_of_dot_separated_words_are_routing_keys(event_type: str) -> None:
    """Names a topic exchange and a NATS subject both accept pass unchanged."""
    assert routing_key(event_type) == event_type


@pytest.mark.parametrize(
    "event_type",
    ["", "order placed", "order.*", "order.#", "orders.>", ".order", "order.", "a..b", "x" * 201],
)
def test_event_types_that_cannot_be_routing_keys_are_refused_with_the_rule(
    event_type: str,
) -> None:
    """Spaces, wildcards, empty words and overlong names are named and explained."""
    with pytest.raises(SerializationError, match="cannot be a broker routing key"):
        routing_key(event_type)
    with pytest.raises(SerializationError, match="dot-separated words"):
        to_message(record(event_type=event_type), "orders")


BAD_MESSAGES: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "not valid JSON"),
    ("truncated JSON", b'{"specversion": "1.0"', "not valid JSON"),
    ("invalid UTF-8", b'{"id": "\xff"}', "not valid JSON"),
    ("an array", b"[1, 2]", "Expected `object`, got `array`"),
    ("a string", b'"hello"', "Expected `object`, got `str`"),
    ("missing id", encode(document(id=...)), "missing required field `id`"),
    ("missing subject", encode(document(subject=...)), "missing required field `subject`"),
    ("empty type", encode(document(type="")), "`$.type`"),
    ("id a number", encode(document(id=7)), "Expected `str`, got `int` - at `$.id`"),
    ("old specversion", encode(document(specversion="0.3")), "specversion is '0.3'"),
    ("xml data", encode(document(datacontenttype="application/xml")), "datacontenttype"),
    ("time not a time", encode(document(time="yesterday")), "`$.time`"),
    ("time without offset", encode(document(time="2025-01-15T10:00:00")), "no UTC offset"),
    ("schema version text", encode(document(schemaversion="2")), "`$.schemaversion`"),
    ("schema version negative", encode(document(schemaversion=-1)), ">= 1"),
    ("schema version a float", encode(document(schemaversion=1.5)), "`$.schemaversion`"),
    ("schema version a bool", encode(document(schemaversion=True)), "`$.schemaversion`"),
    ("aggregate version zero", encode(document(aggregateversion=0)), "aggregateversion"),
    ("no data", encode(document(data=...)), "data is missing"),
    ("data a list", encode(document(data=[1])), "not a JSON object"),
    ("base64 data", encode(document(data=..., data_base64="e30=")), "data_base64"),
    ("time past 9999 in UTC", encode(document(time="9999-12-31T23:30:00-01:00")), "out of range"),
    ("time before 1 in UTC", encode(document(time="0001-01-01T00:30:00+01:00")), "out of range"),
    ("version past 32 bits", encode(document(aggregateversion=2**31)), "<= 2147483647"),
    ("schema past 32 bits", encode(document(schemaversion=2**40)), "`$.schemaversion`"),
    ("NUL in the id", encode(document(id="a\u0000b")), "id 'a\\x00b' holds a control"),
    ("newline in the subject", encode(document(subject="o-1\n")), "subject 'o-1\\n' holds"),
    ("C1 control in the source", encode(document(source="s\u0085")), "source 's\\x85' holds"),
    (
        "a leap second as the time",
        encode(document(time="2016-12-31T23:59:60Z")),
        "$.time is '2016-12-31T23:59:60Z', a leap second: valid RFC 3339, but",
    ),
    (
        "an unpaired surrogate escape in the data",
        encode(document(data={"note": "@@"})).replace(b"@@", b"a\\ud800"),
        "unpaired UTF-16 surrogate escape \\ud800 in $.data.note (byte",
    ),
    (
        "an unpaired low surrogate escape in the subject",
        encode(document(subject="@@")).replace(b"@@", b"\\udc00"),
        "unpaired UTF-16 surrogate escape \\udc00 in $.subject",
    ),
    (
        "an unpaired surrogate escape in a key of the data",
        encode(document(data={"@@": 1})).replace(b"@@", b"\\ud800"),
        "unpaired UTF-16 surrogate escape \\ud800 in a key of $.data",
    ),
    (
        "invalid UTF-8 in the data",
        encode(document(data={"note": "@@"})).replace(b"@@", b"\xff"),
        "not UTF-8 text",
    ),
    (
        "invalid UTF-8 in an extension's name",
        encode(document(note="x")).replace(b"note", b"not\xfe"),
        "not UTF-8 text",
    ),
]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(body, reason) for _, body, reason in BAD_MESSAGES],
    ids=[name for name, _, _ in BAD_MESSAGES],
)
def test_a_bad_message_is_refused_with_a_reason_naming_what_is_wrong(
    body: bytes, reason: str
) -> None:
    """Each kind of bad input raises BadMessageError; its reason points at the fault."""
    with pytest.raises(BadMessageError) as caught:
        from_message(body)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("changes", "name"),
    [({"event_id": "e\x00"}, "id"), ({"stream_id": "order\n42"}, "subject")],
)
def test_a_record_with_a_control_character_in_an_attribute_cannot_be_sent(
    changes: dict[str, str], name: str
) -> None:
    """What every reader refuses is not written: the relay dead-letters it instead."""
    with pytest.raises(SerializationError, match=f"{name} .* holds a control character"):
        to_message(record(**changes), "orders")
    with pytest.raises(SerializationError, match="source .* holds a control character"):
        to_message(record(), "orders\r")


def test_an_oversize_message_is_refused_before_it_is_parsed() -> None:
    """The size limit is configurable; the reason gives both sizes."""
    body = to_message(record(), "orders").body
    with pytest.raises(BadMessageError, match=f"{len(body)} bytes is larger than the limit of 64"):
        from_message(body, max_bytes=64)


def test_deeply_nested_data_is_a_bad_message_not_a_crash() -> None:
    """A hostile nesting depth ends as BadMessageError."""
    body = to_message(record(data=b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"), "o").body
    with pytest.raises(BadMessageError, match="not valid JSON"):
        from_message(body)


def test_json_media_types_with_parameters_or_a_json_suffix_are_accepted() -> None:
    """application/json; charset=utf-8 and application/vnd.x+json are JSON data."""
    for media in ("application/json; charset=utf-8", "application/vnd.shop+json", "text/json"):
        assert from_message(encode(document(datacontenttype=media))).event_id


def test_unknown_extension_attributes_are_ignored() -> None:
    """Other producers' extensions do not make our message bad."""
    assert from_message(encode(document(partitionkey="p-1"))).stream_id == "order-42"


def _outcome(body: bytes) -> None:
    """Either a record or BadMessageError; any other exception fails the test."""
    try:
        result: EventRecord | str = from_message(body, max_bytes=4096)
    except BadMessageError as exc:
        result = exc.reason
    assert isinstance(result, EventRecord) or result


@settings(max_examples=400)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_a_record_or_a_bad_message(body: bytes) -> None:
    """Fuzz: random bytes never raise anything but BadMessageError."""
    _outcome(body)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    st.dictionaries(
        st.sampled_from(sorted(document())) | st.text(max_size=8), JSON_VALUES, max_size=4
    ),
    st.lists(st.sampled_from(sorted(document())), max_size=3),
)
def test_mutated_valid_messages_are_a_record_or_a_bad_message(
    changes: dict[str, Any], removed: list[str]
) -> None:
    """Fuzz: a valid message with attributes replaced or removed never crashes the reader."""
    doc = document(**changes)
    for key in removed:
        doc.pop(key, None)
    _outcome(encode(doc))


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=600), st.binary(min_size=1, max_size=4))
def test_damaged_bytes_of_a_valid_message_are_a_record_or_a_bad_message(
    at: int, junk: bytes
) -> None:
    """Fuzz: bytes of a valid body overwritten anywhere never crash the reader."""
    body = bytearray(to_message(record(), "orders").body)
    position = at % len(body)
    body[position : position + len(junk)] = junk
    _outcome(bytes(body))


ATTRIBUTE_TEXT = st.text(  # CloudEvents attribute strings hold no control characters
    st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40
)
RECORDS = st.builds(
    EventRecord,
    event_id=ATTRIBUTE_TEXT,
    stream_id=ATTRIBUTE_TEXT,
    version=st.integers(min_value=1, max_value=2**31 - 1),
    event_type=st.from_regex(r"[A-Za-z0-9_:-]{1,12}(\.[A-Za-z0-9_:-]{1,12}){0,3}", fullmatch=True),
    schema_version=st.integers(min_value=1, max_value=1000),
    occurred_at=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    ),
    data=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
)


@settings(max_examples=300)
@given(RECORDS)
def test_any_record_survives_the_wire_unchanged(original: EventRecord) -> None:
    """Property: reading what we wrote gives back the record (its time in UTC)."""
    back = from_message(to_message(original, "orders").body)
    assert back.event_id == original.event_id
    assert back.stream_id == original.stream_id
    assert (back.version, back.schema_version) == (original.version, original.schema_version)
    assert back.event_type == original.event_type
    assert back.occurred_at == original.occurred_at
    assert json.loads(back.data) == json.loads(original.data)


def test_a_whole_surrogate_pair_and_an_escaped_backslash_before_u_are_read() -> None:
    """Only half a pair is refused: an escaped pair is one character, and ``\\\\ud800``
    is a backslash followed by the letters ``ud800``."""
    body = encode(document(data={"note": "@@"})).replace(b"@@", b"\\ud83d\\ude00 \\\\ud800")
    assert json.loads(from_message(body).data) == {"note": "\U0001f600 \\ud800"}


def test_a_time_that_is_not_a_leap_second_keeps_the_decoders_reason() -> None:
    """Second 59 of month 13 is no leap second: the reason stays msgspec's own."""
    with pytest.raises(BadMessageError) as caught:
        from_message(encode(document(time="2016-13-31T23:59:59Z")))
    assert "Invalid RFC3339" in caught.value.reason
    assert "leap second" not in caught.value.reason


def test_what_the_encoder_remembers_is_only_what_passed_its_checks() -> None:
    """The encoder checks each source and event type once and remembers it: one that
    failed is refused every time, one that passed encodes as before, and the memory
    stays bounded however many a custom caller sends."""
    for _ in range(2):
        with pytest.raises(SerializationError, match="holds a control character"):
            to_message(record(), "orders\x00")
        with pytest.raises(SerializationError, match="cannot be a broker routing key"):
            to_message(record(event_type="order placed"), "orders")
        assert to_message(record(event_type="order.placed"), "orders").routing_key == (
            "order.placed"
        )
    for n in range(5000):
        to_message(record(event_type=f"type.n{n}"), f"source-{n}")
    assert len(cloudevents._CHECKED_SOURCES) <= 4096
    assert len(cloudevents._ROUTING_KEYS) <= 4096

"""The wire format: CloudEvents 1.0, structured JSON mode, one event per message.

A message we publish is a JSON object any CloudEvents SDK reads::

    {"specversion": "1.0", "id": "<event id>", "source": "<bounded context>",
     "type": "<event type>", "subject": "<aggregate id>", "time": "<RFC 3339>",
     "datacontenttype": "application/json", "schemaversion": 1, "aggregateversion": 3,
     "traceparent": "00-...-01", "data": {...the payload...}}

``schemaversion`` and ``aggregateversion`` are extension attributes (CloudEvents
integers); ``traceparent`` and ``tracestate`` follow the distributed-tracing extension and
appear only when the event's metadata has them. ``tidingsposition`` is the event's
position in the source's global log (a CloudEvents String of decimal digits, since an
Integer is 32-bit and a log may outgrow it): the relay sends it for every event the
outbox took from the event log, so a reader in another service can wait for a write
(docs/cqrs.md); messages without it (other producers, sent messages) read as before.
``from_message`` is strict: anything that is not such a document raises
``BadMessageError`` whose reason names what is wrong, so a consumer can park it in its
dead letters and go on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from tidings.domain._fast import frozen_builder
from tidings.errors import BadMessageError, SerializationError
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord
from tidings.serialization.json_reasons import leap_second, unpaired_surrogate

CONTENT_TYPE = "application/cloudevents+json"
"""The media type of a structured-mode CloudEvent in JSON, for the broker's header."""

DEFAULT_MAX_BYTES = 1024 * 1024
"""Largest message body ``from_message`` reads by default (1 MiB)."""

SPEC_VERSION = "1.0"

# A routing key is dot-separated words: an AMQP topic exchange and a NATS subject split
# on dots, and give '*', '#', '>' and whitespace other meanings, so none may appear.
_ROUTING_KEY = re.compile(r"[A-Za-z0-9_\-:]+(?:\.[A-Za-z0-9_\-:]+)*")
_MAX_ROUTING_KEY_BYTES = 200  # AMQP allows 255; leave room for a NATS subject prefix
_JSON_MEDIA = re.compile(r"(?:application|text)/(?:[\w.+-]+\+)?json\s*(?:;.*)?", re.IGNORECASE)
# CloudEvents attribute strings must not hold control characters (spec, "Type System").
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_ATTRIBUTES = (
    *("id", "source", "type", "subject", "traceparent", "tracestate"),
    *("correlationid", "causationid"),
)
# Metadata key -> CloudEvents extension attribute (lower-case letters and digits only).
_WIRE_KEYS = {
    "traceparent": "traceparent",
    "tracestate": "tracestate",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
}
MAX_KEY_CHARACTERS = 256
"""The longest ``id`` and ``subject`` (aggregate id) a message may carry: both become keys
of the consumer's tables (the inbox's, the in-flight record's), and a database index takes
keys of a few kilobytes at most (PostgreSQL: about 2,700 bytes, UTF-8 up to 4 a character)."""
_KEY_ATTRIBUTES = ("id", "subject")
POSITION_KEY = "source_position"
"""Metadata key of an event's position in the source's log: in an outbox row's headers
(``with_position``) and in the metadata of a received record."""
POSITION_ATTRIBUTE = "tidingsposition"
_MAX_POSITION = 2**63 - 1  # a BIGINT: the widest position column of any store

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# A CloudEvents Integer is 32-bit signed; the stores' version columns are too.
Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class _Envelope(msgspec.Struct):
    """The attributes tidings needs; unknown extension attributes are allowed and ignored."""

    specversion: str
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    subject: NonEmpty
    time: datetime
    schemaversion: Version
    aggregateversion: Version
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    datacontenttype: str = "application/json"
    data_base64: Any = None
    traceparent: NonEmpty | None = None
    tracestate: str | None = None
    correlationid: NonEmpty | None = None
    causationid: NonEmpty | None = None
    tidingsposition: str | int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Envelope)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])


def routing_key(event_type: str) -> str:
    """The event type as a routing key, or ``SerializationError`` saying why it cannot be.

    Event types become RabbitMQ routing keys and the last tokens of NATS subjects, so they
    must be dot-separated words of letters, digits, ``_``, ``-`` and ``:``.
    """
    if _ROUTING_KEY.fullmatch(event_type) and len(event_type) <= _MAX_ROUTING_KEY_BYTES:
        return event_type
    raise SerializationError(
        f"event type {event_type!r} cannot be a broker routing key (RabbitMQ) or subject "
        "token (NATS): use dot-separated words of letters, digits, '_', '-' and ':', at "
        f"most {_MAX_ROUTING_KEY_BYTES} characters, with no spaces and no wildcards "
        "('*', '#', '>'). Register the event class under such a name (event_type = ...)"
    )


def to_message(record: EventRecord, source: str) -> OutgoingMessage:
    """The CloudEvent of ``record``, published by the bounded context ``source``."""
    if source not in _CHECKED_SOURCES:
        _check_source(source)
    event_id, stream_id = record.event_id, record.stream_id
    if (  # one test for the usual message; the complaint is built only if one fails
        _CONTROL.search(event_id)
        or _CONTROL.search(stream_id)
        or len(event_id) > MAX_KEY_CHARACTERS
        or len(stream_id) > MAX_KEY_CHARACTERS
    ):
        _refuse_keys(event_id, stream_id)
    key = _ROUTING_KEYS.get(record.event_type)
    if key is None:
        key = _remember_routing_key(record.event_type)
    document: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source,
        "type": record.event_type,
        "subject": stream_id,
        "time": _rfc3339(record.occurred_at),
        "datacontenttype": "application/json",
        "schemaversion": record.schema_version,
        "aggregateversion": record.version,
    }
    if record.metadata not in _NO_METADATA:
        context = _wire_context(record.metadata)
        for name, value in context.items():
            if _CONTROL.search(value):
                raise SerializationError(_control_character(name, value))
        document.update(context)
    # The payload is already JSON: embed its bytes as they are rather than parse them.
    document["data"] = msgspec.Raw(record.data)
    return _new_message(event_id, key, stream_id, _encoder.encode(document), {})


# Checked once and remembered (a relay encodes every event through to_message): the
# sources a process publishes from, and the event types it publishes, are a handful.
_CHECKED_SOURCES: set[str] = set()
_ROUTING_KEYS: dict[str, str] = {}
_REMEMBERED_AT_MOST = 4096
_NO_METADATA = (b"", b"{}")
# OutgoingMessage(...) for every event published (see tidings.domain._fast).
_new_message: Callable[[str, str, str, bytes, Mapping[str, str]], OutgoingMessage] = frozen_builder(
    OutgoingMessage
)


def _refuse_keys(event_id: str, stream_id: str) -> None:
    """Raise the complaint about the id or subject that no reader would take."""
    for name, value in (("id", event_id), ("subject", stream_id)):
        if _CONTROL.search(value):  # every reader would refuse the message
            raise SerializationError(_control_character(name, value))
    for name, value in (("id", event_id), ("subject", stream_id)):
        if len(value) > MAX_KEY_CHARACTERS:  # every tidings consumer would refuse it
            raise SerializationError(_too_long(name, value))


def _check_source(source: str) -> None:
    if not source:
        raise SerializationError("a CloudEvent needs a source: name the bounded context")
    if _CONTROL.search(source):  # every reader would refuse the message
        raise SerializationError(_control_character("source", source))
    if len(_CHECKED_SOURCES) < _REMEMBERED_AT_MOST:
        _CHECKED_SOURCES.add(source)


def _remember_routing_key(event_type: str) -> str:
    key = routing_key(event_type)
    if len(_ROUTING_KEYS) < _REMEMBERED_AT_MOST:
        _ROUTING_KEYS[event_type] = key
    return key


def from_message(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> EventRecord:
    """The event in a received message, or ``BadMessageError`` naming what is wrong."""
    if len(body) > max_bytes:
        raise BadMessageError(
            f"message of {len(body)} bytes is larger than the limit of {max_bytes} bytes"
        )
    _check_utf8(body)
    try:
        envelope = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadMessageError(f"not a tidings CloudEvent: {leap_second(exc, body) or exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadMessageError(f"not valid JSON: {unpaired_surrogate(body) or exc}") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise BadMessageError(f"not valid JSON: {exc}") from exc
    _check(envelope)
    metadata = _metadata_of(envelope)
    position = _position_of(envelope.tidingsposition)
    if position is not None:
        metadata[POSITION_KEY] = position
    return EventRecord(
        event_id=envelope.id,
        stream_id=envelope.subject,
        version=envelope.aggregateversion,
        event_type=envelope.type,
        schema_version=envelope.schemaversion,
        occurred_at=_in_utc(envelope.time),
        data=bytes(envelope.data),
        metadata=_encoder.encode(metadata),
    )


def with_position(metadata: bytes, position: int) -> bytes:
    """``metadata`` (a JSON object) with the event's log position added, as an outbox row
    keeps it for the relay to put on the wire. The bytes are spliced, not parsed: this
    runs for every event an outbox writes. A key of the same name already there stays
    in the document, before ours, and ours is the one a decoder keeps (the last)."""
    if position <= 0:
        return metadata  # not from the event log (a sent message): nothing to say
    stamp = b'"%s":%d}' % (POSITION_KEY.encode(), position)
    body = metadata.rstrip()
    if body in (b"", b"{}"):
        return b"{" + stamp
    return body[:-1] + b"," + stamp


def _position_of(value: str | int | None) -> int | None:
    """The log position a message carries, None when it carries none, or
    ``BadMessageError`` when the attribute is there but no position."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_POSITION:
        return value
    raise BadMessageError(
        f"{POSITION_ATTRIBUTE} is {value!r}; it is the event's position in its source's "
        f"log, a string of decimal digits from 1 to {_MAX_POSITION} (or leave it out)"
    )


def _in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a time at the edge of the calendar may not move there."""
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00:00-02:00 is in the year 10000 in UTC
        raise BadMessageError(
            f"time {moment.isoformat()} is out of range once moved to UTC (years 1 to 9999)"
        ) from exc


def _check_utf8(body: bytes) -> None:
    """JSON is UTF-8 text (RFC 8259). The decoder checks the strings it reads, but not
    those it skips (the raw ``data``, unknown attributes): a bad byte there would get
    through and fail later, where the inbox stores the payload."""
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise BadMessageError(f"not valid JSON: the message is not UTF-8 text ({exc})") from exc


def _check(envelope: _Envelope) -> None:
    """The rules a decoder's types cannot say."""
    if envelope.specversion != SPEC_VERSION:
        raise BadMessageError(
            f"specversion is {envelope.specversion!r}; tidings reads CloudEvents "
            f"{SPEC_VERSION!r} only"
        )
    media = envelope.datacontenttype
    if media != "application/json" and not _JSON_MEDIA.fullmatch(media):
        raise BadMessageError(
            f"datacontenttype is {envelope.datacontenttype!r}; tidings reads JSON data "
            "only (application/json)"
        )
    if envelope.data_base64 is not None:
        raise BadMessageError("data_base64 is not supported: send the payload as JSON in 'data'")
    _check_texts(envelope)
    if envelope.time.tzinfo is None:
        raise BadMessageError(
            "time has no UTC offset: use RFC 3339 with 'Z' or '+hh:mm' (e.g. 2024-05-01T12:00:00Z)"
        )
    if not bytes(envelope.data).startswith(b"{"):
        raise BadMessageError(
            "data is missing or not a JSON object: the payload of an event is an object"
        )


def _check_texts(e: _Envelope) -> None:
    """No control character in any text attribute, no key attribute too long. The
    attributes are read by name, not by getattr: this runs for every message."""
    joined = e.id + e.source + e.type + e.subject
    for extension in (e.traceparent, e.tracestate, e.correlationid, e.causationid):
        if extension is not None:
            joined += extension
    if _CONTROL.search(joined):  # one search a message; which attribute, only if found
        for name in _TEXT_ATTRIBUTES:
            value = getattr(e, name)
            if value is not None and _CONTROL.search(value):
                raise BadMessageError(_control_character(name, value))
    if len(e.id) > MAX_KEY_CHARACTERS or len(e.subject) > MAX_KEY_CHARACTERS:
        for name in _KEY_ATTRIBUTES:
            if len(getattr(e, name)) > MAX_KEY_CHARACTERS:
                raise BadMessageError(_too_long(name, getattr(e, name)))


def _control_character(name: str, value: str) -> str:
    """The complaint about a control character in attribute ``name``."""
    return (
        f"{name} {value!r} holds a control character, which CloudEvents attributes must not "
        "(U+0000 to U+001F, U+007F to U+009F)"
    )


def _too_long(name: str, value: str) -> str:
    """The complaint about a key attribute longer than a consumer's tables take."""
    return (
        f"{name} is {len(value):,} characters long ({len(value.encode()):,} bytes); tidings "
        f"takes at most {MAX_KEY_CHARACTERS} characters, since it becomes a key of the "
        f"consumer's tables. It begins {value[:40]!r}"
    )


def _metadata_of(envelope: _Envelope) -> dict[str, Any]:
    """What the record keeps of the envelope beyond its own fields."""
    metadata: dict[str, Any] = {"source": envelope.source}
    # The _WIRE_KEYS, by name: this runs for every message.
    if envelope.traceparent is not None:
        metadata["traceparent"] = envelope.traceparent
    if envelope.tracestate is not None:
        metadata["tracestate"] = envelope.tracestate
    if envelope.correlationid is not None:
        metadata["correlation_id"] = envelope.correlationid
    if envelope.causationid is not None:
        metadata["causation_id"] = envelope.causationid
    return metadata


def _wire_context(metadata: bytes) -> dict[str, str]:
    """The extension attributes a record's metadata puts on the wire: the W3C trace
    context, the correlation and causation ids, the position in the source's log."""
    if metadata in _NO_METADATA:
        return {}
    try:
        values = _metadata_decoder.decode(metadata)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise SerializationError(f"event metadata is not a JSON object: {exc}") from exc
    context = {
        attribute: values[key]
        for key, attribute in _WIRE_KEYS.items()
        if isinstance(values.get(key), str) and values[key]
    }
    position = values.get(POSITION_KEY)
    if isinstance(position, int) and not isinstance(position, bool) and position > 0:
        context[POSITION_ATTRIBUTE] = str(position)
    return context


def _rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', which every CloudEvents SDK parses."""
    text = moment.isoformat()
    if text.endswith("+00:00"):  # a stored time, already in UTC: one C call (every message)
        return text[:-6] + "Z"
    offset = moment.utcoffset()
    if offset is None:
        raise SerializationError(
            f"occurred_at {moment.isoformat()} has no time zone: events are stamped in UTC"
        )
    if offset:  # stored times come back in UTC already: convert only the others
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"

"""JsonCodec: domain events to stored records and back, typed and validated by msgspec."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from tidings.domain._fast import dict_reader, envelope_setter, fields_in_dict, set_field
from tidings.domain.events import DomainEvent
from tidings.errors import ConfigurationError, DecodeError, SerializationError
from tidings.ports import Transaction
from tidings.records import EventRecord, FreshRecords, new_record
from tidings.serialization.json_reasons import leap_second, unpaired_surrogate
from tidings.serialization.personal import PersonalDataCipher, PersonalFields, personal_fields
from tidings.serialization.registry import EventRegistry


class JsonCodec:
    """Encodes an event's payload fields to JSON, and decodes with type checks.

    Decoding builds the registered class straight from the bytes (msgspec validates every
    field on the way), so a wrong field type is caught at the boundary with the field's
    path in the message, not later as a confusing ``AttributeError`` in a handler.
    No pickle, no eval: only JSON and the classes the registry names.

    Fields a class marks as ``personal_data`` are sealed with their subject's key by
    ``cipher`` on the way in (inside the writer's transaction ``tx``, where the key is
    read or created) and opened on the way out: what is stored, and every copy of the
    record (outbox rows included), holds only the ciphertext.
    """

    def __init__(self, registry: EventRegistry, cipher: PersonalDataCipher | None = None) -> None:
        self.registry = registry
        self.cipher = cipher
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[type[DomainEvent], msgspec.json.Decoder[Any]] = {}
        self._personal: dict[type[DomainEvent], PersonalFields] = {}
        # class -> how to encode it, learnt once: a class stays registered once it is
        self._plans: dict[type[DomainEvent], _Plan] = {}
        self._readings: dict[tuple[str, int], tuple[Any, ...]] = {}

    def encode(
        self, event: DomainEvent, metadata: bytes = b"{}", tx: Transaction | None = None
    ) -> EventRecord:
        """Turn a recorded (stamped) event into the record a store writes."""
        return self.encode_all((event,), metadata, tx)[0]

    def encode_all(
        self,
        events: Iterable[DomainEvent],
        metadata: bytes = b"{}",
        tx: Transaction | None = None,
    ) -> FreshRecords:
        """``encode`` of each event, in order, as a list nobody else holds yet.

        The unit of work encodes all the events it writes here: one loop, rather than a
        call per event, for the path every written event takes.
        """
        records = FreshRecords()
        keep, plans, encode = records.append, self._plans, self._encoder.encode
        for event in events:
            cls = type(event)
            plan = plans.get(cls)
            if plan is None:
                plan = plans[cls] = self._plan(cls)
            event_type, schema_version, payload_of, personal = plan
            if not event.event_id:
                raise SerializationError(
                    f"{event_type} has no event id: events are stored only after an aggregate "
                    "recorded them (aggregate.record(event))"
                )
            payload = payload_of(event)
            if personal:
                self._seal(event, payload, personal, tx)
            try:
                data = encode(payload)
            except (TypeError, msgspec.EncodeError) as exc:
                raise SerializationError(
                    f"cannot encode {event_type} {event.event_id} as JSON: {exc}. Use field "
                    "types msgspec supports (str, int, Decimal, datetime, UUID, lists, "
                    "dataclasses, ...)"
                ) from exc
            keep(
                new_record(
                    event.event_id,
                    event.aggregate_id,
                    event.aggregate_version,
                    event_type,
                    schema_version,
                    event.occurred_at,
                    data,
                    metadata,
                    0,
                )
            )
        return records

    def _plan(self, cls: type[DomainEvent]) -> _Plan:
        """The stored name, the schema version, the function from an event to its payload
        dict, and the personal fields."""
        names = cls.payload_fields()
        in_dict = fields_in_dict(cls) and all(
            f.init for f in dataclasses.fields(cls) if f.name in names
        )
        plain = all(_holds_no_datetime(hint) for hint in _field_types(cls, names))
        if in_dict and plain:  # the common event: every value as __init__ stored it
            payload_of = dict_reader(names)
        else:

            def payload_of(event: DomainEvent) -> dict[str, Any]:
                return {name: whole_minute_offsets(getattr(event, name)) for name in names}

        schema_version = cls.schema_version
        return self.registry.type_of(cls), schema_version, payload_of, self._personal_of(cls)

    def decode(
        self, record: EventRecord, source: str = "", *, received: bool | None = None
    ) -> DomainEvent:
        """Turn a record back into its event, or raise an error naming the record.

        ``received``: the record came in a broker message, not from a stored row, which
        the error says (a bad message is the sender's, a bad row is corruption). By
        default a record without a position counts as received: every stored record has
        one, and one read from a message (``from_message``) has none.
        """
        reading = self._readings.get((record.event_type, record.schema_version))
        if reading is None:
            reading = self._reading(record)
        cls, decoder, personal, put_envelope = reading
        if received is None:
            received = not record.position
        data = record.data
        if record.schema_version != cls.schema_version:
            data = self._upcast(record, cls, source, received)
        try:
            event: DomainEvent = decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise DecodeError(
                _misfit(cls, leap_second(exc, data) or str(exc), record, source, received)
            ) from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(
                f"{_payload(received)} is not valid JSON: {unpaired_surrogate(data) or exc} "
                f"({_where(record, source, received)})"
            ) from exc
        except (UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(
                f"{_payload(received)} is not valid JSON: {exc} "
                f"({_where(record, source, received)})"
            ) from exc
        # The event was just built here: nobody else holds it yet.
        put_envelope(event, record.event_id, record.occurred_at, record.stream_id, record.version)
        if personal:
            self._open(event, personal)
        return event

    def _reading(self, record: EventRecord) -> tuple[Any, ...]:
        """How to read records of this type and version: the class, its decoder, its
        personal fields, how to set its envelope in place. Kept per (type, version):
        a name resolves to the same class for good once it resolves at all."""
        cls = self.registry.resolve(record.event_type, record.schema_version)
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(cls)
        reading = (cls, decoder, self._personal_of(cls), envelope_setter(cls))
        self._readings[record.event_type, record.schema_version] = reading
        return reading

    def _personal_of(self, cls: type[DomainEvent]) -> PersonalFields:
        personal = self._personal.get(cls)
        if personal is None:
            personal = self._personal[cls] = personal_fields(cls)
            if personal and self.cipher is None:
                raise ConfigurationError(
                    f"{cls.__qualname__} has personal data, and this codec has no key store "
                    "to seal it with: build it with JsonCodec(registry, cipher=...), or use "
                    "the store's codec (tidings.connect(...).codec)"
                )
        return personal

    def _seal(
        self,
        event: DomainEvent,
        payload: dict[str, Any],
        personal: PersonalFields,
        tx: Transaction | None,
    ) -> None:
        """Replace the personal values of ``payload`` by tokens sealed for their subject."""
        cipher = self.cipher
        assert cipher is not None  # noqa: S101 - _personal_of refused a codec without one
        for field, subject_field in personal:
            value = payload[field]
            if value is not None:
                subject = getattr(event, subject_field)
                bound = f"event {event.event_id} field {field}"
                payload[field] = cipher.seal(tx, subject, value, bound)

    def _open(self, event: DomainEvent, personal: PersonalFields) -> None:
        """Put the plaintext (or the redaction marker) back into a decoded event."""
        cipher = self.cipher
        assert cipher is not None  # noqa: S101 - _personal_of refused a codec without one
        for field, subject_field in personal:
            value = getattr(event, field)
            if value is not None:
                subject = getattr(event, subject_field)
                bound = f"event {event.event_id} field {field}"
                set_field(event, field, cipher.open(subject, value, bound))

    def _upcast(
        self, record: EventRecord, cls: type[DomainEvent], source: str, received: bool
    ) -> bytes:
        """The payload of an older schema version, carried through the registered
        upcasters to the class's version. Only old records take this path, so reading
        current ones stays one typed decode."""
        document = self._document(record, source, received)
        for version in range(record.schema_version, cls.schema_version):
            upcaster = self.registry.upcaster(cls, version)
            if upcaster is None:
                raise DecodeError(
                    f"{record.event_type} is {'received' if received else 'stored'} at schema "
                    f"version {record.schema_version} "
                    f"but {cls.__qualname__} is version {cls.schema_version}, and no upcaster "
                    f"is registered for it from version {version} to {version + 1} "
                    f"({_where(record, source, received)})"
                )
            try:
                document = upcaster(document)
            except Exception as exc:  # user code: report it with the record it failed on
                raise DecodeError(
                    f"the upcaster of {cls.__qualname__} from version {version} failed: "
                    f"{exc!r} ({_where(record, source, received)})"
                ) from exc
            if not isinstance(document, dict):
                raise DecodeError(
                    f"the upcaster of {cls.__qualname__} from version {version} returned "
                    f"{type(document).__name__}, not a dict ({_where(record, source, received)})"
                )
        return self._encoder.encode(document)

    def _document(self, record: EventRecord, source: str, received: bool) -> dict[str, Any]:
        try:
            document = msgspec.json.decode(record.data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = (
                unpaired_surrogate(record.data) if isinstance(exc, msgspec.DecodeError) else None
            )
            raise DecodeError(
                f"{_payload(received)} is not valid JSON: {reason or exc} "
                f"({_where(record, source, received)})"
            ) from exc
        if not isinstance(document, dict):
            raise DecodeError(
                f"{_payload(received)} is not a JSON object ({_where(record, source, received)})"
            )
        return document


_PLAIN = frozenset({str, int, float, bool, type(None), Decimal, UUID})

_Plan = tuple[str, int, Callable[[DomainEvent], dict[str, Any]], PersonalFields]


def _field_types(cls: type[DomainEvent], names: tuple[str, ...]) -> list[Any]:
    """The declared types of ``names``; ``Any`` for each when they cannot be resolved (a
    name only the defining module knew, say), which counts as "might be a datetime"."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # any failure to resolve them means: look at the values
        return [Any] * len(names)
    return [hints.get(name, Any) for name in names]


def _holds_no_datetime(hint: Any) -> bool:
    """True when a value of type ``hint`` is one of the plain kinds (or a union of them,
    ``str | None`` say), which never hold a datetime; False for anything else."""
    if hint in _PLAIN:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_holds_no_datetime(arg) for arg in typing.get_args(hint))
    return False


def whole_minute_offsets(value: Any) -> Any:  # noqa: PLR0911 - one return per kind
    """``value`` with every datetime whose UTC offset has seconds moved to UTC.

    JSON (RFC 3339) offsets have whole minutes, and msgspec rounds the rest away, which
    would change the instant of, say, a local-mean-time date before 1900. Moving such a
    datetime to UTC keeps its instant; every other value passes through untouched.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is datetime:
        offset = value.utcoffset()
        if offset is not None and offset % timedelta(minutes=1):
            return value.astimezone(UTC)
        return value
    if kind is tuple or kind is list:
        return kind(whole_minute_offsets(item) for item in value)
    if kind is dict:
        return {key: whole_minute_offsets(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: whole_minute_offsets(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    return value


def _from(source: str) -> str:
    return f", in {source}" if source else ""


def _payload(received: bool) -> str:
    """What the bytes being decoded are, for an error message."""
    return "the received message's data" if received else "stored payload"


def _where(record: EventRecord, source: str, received: bool) -> str:
    """The record, and the store it was stored in or received for."""
    if received:
        by = f" received by {source}" if source else ""
        return f"{record.describe()}, from a broker message{by}"
    return f"{record.describe()}{_from(source)}"


def _misfit(
    cls: type[DomainEvent], detail: str, record: EventRecord, source: str, received: bool
) -> str:
    """Why a payload that is JSON does not fit its class, and what to do about it."""
    if received:
        return (
            f"the received message's data does not fit {cls.__qualname__}: {detail} "
            f"({_where(record, source, received)}). The sender's {record.event_type} "
            f"v{record.schema_version} does not match this class: if the class changed, run "
            "the same version on both sides or register an upcaster; otherwise the sender "
            "published a malformed event"
        )
    return (
        f"stored payload does not fit {cls.__qualname__}: {detail} "
        f"({_where(record, source, received)}). If the class changed, register an "
        "upcaster for the old version; otherwise the stored row is corrupt"
    )

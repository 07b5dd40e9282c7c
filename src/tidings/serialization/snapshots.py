"""SnapshotCodec: an aggregate's declared snapshot state to JSON and back (msgspec)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import msgspec

from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.personal import AGGREGATE_SUBJECT
from tidings.errors import ConfigurationError, DecodeError, SerializationError
from tidings.ports import Transaction
from tidings.records import SnapshotRecord
from tidings.serialization.codec import whole_minute_offsets
from tidings.serialization.personal import PersonalDataCipher, PersonalFields, personal_fields


class SnapshotCodec:
    """Encodes ``aggregate.to_snapshot()``; decodes into the class's ``snapshot_type``.

    Decoding validates every field against ``snapshot_type``, so a snapshot that does not
    fit is an error here, never a half-right aggregate. Which snapshots may be decoded at
    all (same aggregate type, same ``snapshot_version``) is the loader's check.

    A ``snapshot_type`` dataclass may mark ``personal_data`` like an event does: those
    fields are sealed with their subject's key (``aggregate_id`` names the aggregate
    itself), and read back as the redaction marker once the subject is forgotten.
    """

    def __init__(self, cipher: PersonalDataCipher | None = None) -> None:
        self.cipher = cipher
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[type[EventSourcedAggregate], msgspec.json.Decoder[Any]] = {}
        self._personal: dict[type[EventSourcedAggregate], PersonalFields] = {}

    def encode(
        self, aggregate: EventSourcedAggregate, taken_at: datetime, tx: Transaction | None = None
    ) -> SnapshotRecord:
        """The snapshot of ``aggregate`` at its current version, taken from memory."""
        cls = type(aggregate)
        check_snapshots(cls)
        snapshot = aggregate.to_snapshot()
        personal = self._personal_of(cls)
        if personal:
            snapshot = self._crypt(
                snapshot, personal, aggregate.id, aggregate.version, tx=tx, sealing=True
            )
        try:
            state = self._encoder.encode(whole_minute_offsets(snapshot))
        except (TypeError, msgspec.EncodeError) as exc:
            raise SerializationError(
                f"cannot encode the snapshot state of {cls.__qualname__} {aggregate.id} as "
                f"JSON: {exc}. Return field types msgspec supports from to_snapshot"
            ) from exc
        return SnapshotRecord(
            stream_id=aggregate.id,
            version=aggregate.version,
            aggregate_type=cls.type_name(),
            snapshot_version=cls.snapshot_version,
            state=state,
            taken_at=taken_at,
        )

    def decode(self, record: SnapshotRecord, cls: type[EventSourcedAggregate]) -> Any:
        """The state of ``record`` as ``cls.snapshot_type``, or ``DecodeError``."""
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(cls.snapshot_type)
        try:
            state = decoder.decode(record.state)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(
                f"the snapshot of {record.stream_id!r} at version {record.version} does not "
                f"fit {cls.__qualname__}.snapshot_type: {exc}. If the state's shape changed, "
                f"bump {cls.__qualname__}.snapshot_version so old snapshots are ignored"
            ) from exc
        personal = self._personal_of(cls)
        if personal:
            state = self._crypt(state, personal, record.stream_id, record.version)
        return state

    def check(self, cls: type[EventSourcedAggregate]) -> None:
        """Raise ``ConfigurationError`` if the personal data of ``cls``'s snapshot state
        is declared wrongly, or there is no cipher to seal it with."""
        self._personal_of(cls)

    def _personal_of(self, cls: type[EventSourcedAggregate]) -> PersonalFields:
        personal = self._personal.get(cls)
        if personal is None:
            kind = cls.snapshot_type
            personal = self._personal[cls] = personal_fields(kind) if isinstance(kind, type) else ()
        if personal and self.cipher is None:
            raise ConfigurationError(
                f"{cls.__qualname__}'s snapshot state has personal data, and this snapshot "
                "codec has no key store to seal it with: build it with SnapshotCodec(cipher)"
            )
        return personal

    def _crypt(
        self,
        state: Any,
        personal: PersonalFields,
        stream_id: str,
        version: int,
        *,
        tx: Transaction | None = None,
        sealing: bool = False,
    ) -> Any:
        """``state`` with its personal fields sealed in ``tx``, or opened."""
        cipher = self.cipher
        assert cipher is not None  # noqa: S101 - _personal_of refused a codec without one
        changes = {}
        for field, subject_field in personal:
            value = getattr(state, field)
            if value is None:
                continue
            subject = (
                stream_id if subject_field == AGGREGATE_SUBJECT else getattr(state, subject_field)
            )
            bound = f"snapshot of {stream_id} version {version} field {field}"
            if sealing:  # without a transaction seal refuses: never stored in clear
                changes[field] = cipher.seal(tx, subject, value, bound)
            else:
                changes[field] = cipher.open(subject, value, bound)
        return dataclasses.replace(state, **changes)


def check_snapshots(cls: type[EventSourcedAggregate]) -> None:
    """Raise ``ConfigurationError`` unless ``cls`` declares a snapshot state."""
    if not isinstance(cls.snapshot_version, int) or cls.snapshot_version < 1:
        raise ConfigurationError(
            f"{cls.__qualname__} takes no snapshots: set its snapshot_version to 1 (and "
            "snapshot_type), and define to_snapshot and restore_snapshot"
        )

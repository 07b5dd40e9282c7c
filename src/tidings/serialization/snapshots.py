"""SnapshotCodec: an aggregate's declared snapshot state to JSON and back (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.errors import ConfigurationError, DecodeError, SerializationError
from tidings.records import SnapshotRecord
from tidings.serialization.codec import whole_minute_offsets


class SnapshotCodec:
    """Encodes ``aggregate.to_snapshot()``; decodes into the class's ``snapshot_type``.

    Decoding validates every field against ``snapshot_type``, so a snapshot that does not
    fit is an error here, never a half-right aggregate. Which snapshots may be decoded at
    all (same aggregate type, same ``snapshot_version``) is the loader's check.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[type[EventSourcedAggregate], msgspec.json.Decoder[Any]] = {}

    def encode(self, aggregate: EventSourcedAggregate, taken_at: datetime) -> SnapshotRecord:
        """The snapshot of ``aggregate`` at its current version, taken from memory."""
        cls = type(aggregate)
        check_snapshots(cls)
        try:
            state = self._encoder.encode(whole_minute_offsets(aggregate.to_snapshot()))
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
            return decoder.decode(record.state)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(
                f"the snapshot of {record.stream_id!r} at version {record.version} does not "
                f"fit {cls.__qualname__}.snapshot_type: {exc}. If the state's shape changed, "
                f"bump {cls.__qualname__}.snapshot_version so old snapshots are ignored"
            ) from exc


def check_snapshots(cls: type[EventSourcedAggregate]) -> None:
    """Raise ``ConfigurationError`` unless ``cls`` declares a snapshot state."""
    if not isinstance(cls.snapshot_version, int) or cls.snapshot_version < 1:
        raise ConfigurationError(
            f"{cls.__qualname__} takes no snapshots: set its snapshot_version to 1 (and "
            "snapshot_type), and define to_snapshot and restore_snapshot"
        )

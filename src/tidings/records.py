"""The stored form of an event: what crosses the storage ports, before decoding."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from tidings.domain._fast import frozen_builder, slot_setter


def shard_of(aggregate_id: str) -> int:
    """A stable 32-bit hash of an aggregate id; ``shard % lanes`` is the aggregate's lane.

    CRC-32, not ``hash()``: it must be the same in every process and on every machine.
    """
    return zlib.crc32(aggregate_id.encode())


def partition_of(aggregate_id: str, partitions: int) -> int:
    """The partition of ``partitions`` an aggregate's events belong to, the same in every
    process: a projection's part, a consumer's partition."""
    return shard_of(aggregate_id) % partitions


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event as a store keeps it: identity, place in its stream, and encoded payload.

    ``position`` is the place in the store's global log; it is 0 until the store assigns it.
    ``data`` and ``metadata`` are JSON documents (UTF-8 bytes).
    """

    event_id: str
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    occurred_at: datetime
    data: bytes
    metadata: bytes = b"{}"
    position: int = 0

    def describe(self) -> str:
        """Say where the record came from, for error messages."""
        where = f"position {self.position}" if self.position else "not yet stored"
        return (
            f"event {self.event_id} ({self.event_type} v{self.schema_version}) of stream "
            f"{self.stream_id!r} version {self.version}, {where}"
        )


# EventRecord(...) for the hot paths (every event written or read builds one): same
# fields, same frozen record, at a quarter of the cost (see tidings.domain._fast).
new_record: Callable[[str, str, int, str, int, datetime, bytes, bytes, int], EventRecord] = (
    frozen_builder(EventRecord)
)


class FreshRecords(list[EventRecord]):
    """Records built for one append that nobody else holds (the unit of work encodes its
    events into one of these). A store may give them their positions in place with
    ``place``, sparing a copy of every record written; to any other store it is the plain
    list it is."""


_set_position = slot_setter(EventRecord, "position")  # see tidings.domain._fast


def place(record: EventRecord, position: int) -> None:
    """Give a record of a ``FreshRecords`` list its global position, in place.

    Only for records nobody else holds yet: records are frozen to their users, and this
    keeps them so while sparing a second construction of every record on the write path.
    """
    _set_position(record, position)


def place_all(records: FreshRecords, positions: Iterable[int]) -> None:
    """``place`` each record of ``records`` at its position from ``positions``, in order:
    the slot's setter called straight from the loop, not through ``place`` (a Python
    call less for every event written)."""
    for record, position in zip(records, positions, strict=True):
        _set_position(record, position)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a store knows of one stream: its version and when its first and last events
    occurred (by their ``occurred_at``). A stream without events has version 0 and no times.
    """

    stream_id: str
    version: int = 0
    first_occurred_at: datetime | None = None
    last_occurred_at: datetime | None = None

    @property
    def exists(self) -> bool:
        """True when the stream has at least one event."""
        return self.version > 0


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """An aggregate's state at one version of its stream, as a snapshot store keeps it.

    ``aggregate_type`` and ``snapshot_version`` say which class wrote ``state`` (a JSON
    document) and in which shape: a loader uses a snapshot only when both match its own.
    """

    stream_id: str
    version: int
    aggregate_type: str
    snapshot_version: int
    state: bytes
    taken_at: datetime


def require_aware(moment: datetime, what: str = "as_of") -> datetime:
    """Return ``moment`` if it has a time zone, else raise: stores compare instants in UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{what}={moment!r} has no time zone; pass an aware datetime, "
            "for example datetime(2025, 1, 10, tzinfo=UTC)"
        )
    return moment


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A subject's data key: personal fields about ``subject`` are sealed with ``key``
    (AES-256-GCM). ``key_id`` is random and new for every key, so a token names the key
    that sealed it, even after the subject was forgotten and written to again."""

    subject: str
    key_id: str
    key: bytes = field(repr=False)

"""EventSourcedRepository: load aggregates from snapshot + events, save them in a unit of work."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7
from tidings.errors import AggregateNotFoundError, ConfigurationError, DecodeError
from tidings.ports import Database, EventStore, SnapshotStore, Transaction
from tidings.serialization.codec import JsonCodec
from tidings.serialization.snapshots import SnapshotCodec, check_snapshots

log = logging.getLogger(__name__)

A = TypeVar("A", bound=EventSourcedAggregate)


@dataclass(frozen=True)
class Loaded(Generic[A]):
    """An aggregate as loaded, and how: the stream version of the snapshot it started from
    (0: none, a full replay) and how many events were applied on top of it."""

    aggregate: A
    snapshot_at: int
    replayed: int


class EventSourcedRepository(Generic[A]):
    """The aggregates of one event-sourced class, on the store's ports only.

    ``get`` rebuilds an aggregate from its latest usable snapshot plus the events after it
    (or from all events), now, at a ``version`` or ``as_of`` a time; a missing aggregate
    raises ``AggregateNotFoundError``. ``save`` tracks the aggregate in a unit of work,
    which appends its events with the aggregate's stored version as the expected one, and
    writes a snapshot in the same transaction when one is due: every ``snapshot_every``
    events, or when asked. Snapshots are taken from the state in memory, never by a replay.
    """

    def __init__(
        self,
        aggregate_class: type[A],
        database: Database,
        events: EventStore,
        codec: JsonCodec,
        snapshots: SnapshotStore | None = None,
        *,
        snapshot_every: int | None = None,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> None:
        if snapshot_every is not None:
            check_snapshots(aggregate_class)
            if snapshot_every < 1:
                raise ConfigurationError(f"snapshot_every must be 1 or more (got {snapshot_every})")
            if snapshots is None:
                raise ConfigurationError("snapshot_every needs a snapshot store")
        self.aggregate_class = aggregate_class
        self.snapshot_every = snapshot_every
        self._database = database
        self._events = events
        self._codec = codec
        self._snapshots = snapshots
        self._snapshot_codec = SnapshotCodec(codec.cipher)
        if isinstance(aggregate_class.snapshot_version, int) and aggregate_class.snapshot_version:
            self._snapshot_codec.check(aggregate_class)  # its personal data, before any save
        self._clock = clock
        self._ids = ids

    def get(
        self, aggregate_id: str, *, version: int | None = None, as_of: datetime | None = None
    ) -> A:
        """The aggregate now, at ``version``, or as it was at ``as_of``."""
        return self.load(aggregate_id, version=version, as_of=as_of).aggregate

    def load(
        self, aggregate_id: str, *, version: int | None = None, as_of: datetime | None = None
    ) -> Loaded[A]:
        """Like ``get``, and say which snapshot was used and how many events were applied.

        A temporal load (``version`` or ``as_of``) uses only a snapshot at or below the
        version it asks for, so it never starts from a state newer than that point.
        """
        target = self._target_version(aggregate_id, version, as_of)
        aggregate = self._from_snapshot(aggregate_id, target)
        start = aggregate.version if aggregate is not None else 0
        if aggregate is None:
            aggregate = self.aggregate_class(aggregate_id, clock=self._clock, ids=self._ids)
        where = self._database.describe()
        records = self._events.read_stream(aggregate_id, start + 1, target)
        aggregate.replay(self._codec.decode(record, where) for record in records)
        self._check_found(aggregate, target)
        return Loaded(aggregate, start, aggregate.version - start)

    def save(self, uow: UnitOfWork, aggregate: A, *, snapshot: bool = False) -> None:
        """Save ``aggregate``'s pending events in ``uow`` and, if due or asked, a snapshot.

        A concurrent writer shows at the end of the unit of work as ``ConcurrencyError``;
        the snapshot is rolled back with everything else.
        """
        uow.track(aggregate)
        if snapshot or self._snapshot_due(aggregate):
            self._write_snapshot(uow.transaction, aggregate)

    def snapshot(self, aggregate: A) -> None:
        """Snapshot a saved aggregate now, in a transaction of its own (a hot aggregate,
        say). An aggregate with unsaved events is snapshotted by ``save(..., snapshot=True)``.
        """
        if aggregate.pending_events:
            raise ValueError(
                f"{self._name(aggregate.id)} has unsaved events: snapshot it as you save them, "
                "with repository.save(uow, aggregate, snapshot=True)"
            )
        if aggregate.version == 0:
            raise ValueError(f"{self._name(aggregate.id)} has no events to snapshot")
        with self._database.transaction() as tx:
            self._write_snapshot(tx, aggregate)

    def _target_version(
        self, aggregate_id: str, version: int | None, as_of: datetime | None
    ) -> int | None:
        """The version a load asks for (None: the latest); ``as_of`` is turned into one."""
        if version is not None and as_of is not None:
            raise ValueError("give version or as_of, not both")
        if as_of is not None:
            version = self._events.stream_info(aggregate_id, as_of).version
            if version == 0:
                raise AggregateNotFoundError(
                    f"{self._name(aggregate_id)} has no event that occurred at or before "
                    f"{as_of.isoformat()}: it did not exist yet"
                )
        if version is not None and version < 1:
            raise ValueError(f"versions start at 1 (got {version})")
        return version

    def _snapshot_due(self, aggregate: A) -> bool:
        every = self.snapshot_every
        return every is not None and aggregate.version // every > aggregate.stored_version // every

    def _write_snapshot(self, tx: Transaction, aggregate: A) -> None:
        if self._snapshots is None:
            raise ConfigurationError("this repository has no snapshot store")
        self._snapshots.save(tx, self._snapshot_codec.encode(aggregate, self._clock(), tx))

    def _from_snapshot(self, aggregate_id: str, target: int | None) -> A | None:
        """The aggregate restored from its newest usable snapshot, or None."""
        cls = self.aggregate_class
        if self._snapshots is None or cls.snapshot_version < 1:
            return None
        record = self._snapshots.load_latest(
            aggregate_id, cls.type_name(), cls.snapshot_version, target
        )
        if record is None:
            return None
        try:
            state = self._snapshot_codec.decode(record, cls)
        except DecodeError as exc:  # a wrong snapshot costs a replay, never a wrong state
            log.warning("ignoring a snapshot, rebuilding from events: %s", exc)
            return None
        return cls.from_snapshot(
            aggregate_id, record.version, state, clock=self._clock, ids=self._ids
        )

    def _check_found(self, aggregate: A, target: int | None) -> None:
        if aggregate.version == 0:
            raise AggregateNotFoundError(
                f"{self._name(aggregate.id)} has no events: it was never saved (or the id is wrong)"
            )
        if target is not None and aggregate.version < target:
            raise AggregateNotFoundError(
                f"{self._name(aggregate.id)} has no version {target}: its stream ends at "
                f"version {aggregate.version}"
            )

    def _name(self, aggregate_id: str) -> str:
        return f"{self.aggregate_class.__name__} {aggregate_id!r}"

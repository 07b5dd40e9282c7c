"""Safe event migration: copy a store's events through a transformation into a new store.

The spec's third way of evolving events, "batch convert", rewrites the log in place, and
a bug in the conversion then destroys the only copy of history. Here the source is only
ever read: the events go, converted, into a *new, empty* store, which is checked against
what was written before anyone switches over. A failed run leaves the source as it was;
drop the target and run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from tidings.application.event_log import iter_log
from tidings.errors import ConcurrencyError, MigrationError
from tidings.ports import Database, EventStore, KeyStore
from tidings.records import EventRecord

Transform = Callable[[EventRecord], EventRecord | None]
"""Turns a stored record into the record to write, or None to drop it. It may change the
payload (``data``), ``event_type``, ``schema_version`` and ``metadata``; the event id,
stream, version and time are the migration's to keep."""

T = TypeVar("T")

Progress = Callable[[int, int], None]
"""Called after each batch with (records read, records written) so far."""


class MigrationEnd(Protocol):
    """What migrate needs of each store (``tidings.Store`` has it)."""

    @property
    def database(self) -> Database: ...

    @property
    def events(self) -> EventStore: ...

    @property
    def keys(self) -> KeyStore | None: ...


@dataclass(frozen=True)
class MigrationReport:
    """What a migration did: records read, written and dropped, keys copied, and the
    streams whose later versions moved down to close the gap a dropped event left."""

    read: int
    written: int
    dropped: int
    keys: int
    renumbered_streams: int


def migrate(
    source: MigrationEnd,
    target: MigrationEnd,
    transform: Transform | None = None,
    *,
    batch: int = 1000,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every event of ``source`` through ``transform`` into the empty ``target``.

    Event ids, stream ids, versions and ``occurred_at`` are kept; positions are the
    target's own, in the source's order. When a transform drops an event, the later
    events of its stream move down one version, so every stream stays contiguous (and
    snapshots, which name versions, are not copied: they are a cache, rebuilt on use).
    The subjects' keys are copied first, so sealed personal data stays readable, and a
    subject forgotten in the source stays forgotten. Writes go ``batch`` records to a
    transaction; at the end the source must still hold exactly the events read, and the
    target's log is read back and must hold exactly the records written, in order, or
    ``MigrationError`` says what differs.
    """
    if batch < 1:
        raise MigrationError(f"batch must be at least 1 (got {batch})")
    _check_target(source, target)
    keys = _copy_keys(source, target)
    copier = _Copier(target, transform or _same)
    for records in _pages(iter_log(source.events, 0, batch), batch):
        copier.copy(records)
        if progress is not None:
            progress(copier.read, copier.written)
    _verify(source, target, copier)
    return MigrationReport(
        copier.read, copier.written, copier.read - copier.written, keys, len(copier.shift)
    )


def _same(record: EventRecord) -> EventRecord:
    return record


def _check_target(source: MigrationEnd, target: MigrationEnd) -> None:
    where = target.database.describe()
    same_tables = getattr(source.database, "tables", None) == getattr(target.database, "tables", ())
    if source.events is target.events or (same_tables and source.database.describe() == where):
        raise MigrationError(
            f"the source and the target are the same store ({where}): a migration never "
            "writes in place; give it a new, empty target"
        )
    if target.events.count():
        raise MigrationError(
            f"the target {where} already holds events: migrate into a new, empty store "
            "(after a failed run, drop the target's tables and run again)"
        )
    if target.keys is not None and next(iter(target.keys.all_keys()), None) is not None:
        raise MigrationError(f"the target {where} already holds subject keys: use an empty store")


def _copy_keys(source: MigrationEnd, target: MigrationEnd) -> int:
    if source.keys is None:
        return 0
    copied = 0
    for keys in _pages(source.keys.all_keys(), 1000):
        if target.keys is None:
            raise MigrationError(
                f"the source holds personal data keys, and the target "
                f"{target.database.describe()} has no key store to take them"
            )
        with target.database.transaction() as tx:
            for key in keys:
                target.keys.create(tx, key)
        copied += len(keys)
    return copied


def _pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    page: list[T] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


class _Copier:
    """Transforms and writes pages of records; keeps the count and a digest of the writes."""

    def __init__(self, target: MigrationEnd, transform: Transform) -> None:
        self.target = target
        self.transform = transform
        self.read = 0
        self.written = 0
        self.shift: dict[str, int] = {}  # stream -> events dropped so far (only those)
        self.digest = hashlib.sha256()

    def copy(self, records: list[EventRecord]) -> None:
        kept = [out for out in map(self._converted, records) if out is not None]
        if kept:
            with self.target.database.transaction() as tx:
                for run in _runs(kept):
                    try:
                        self.target.events.append(tx, run, run[0].version - 1)
                    except ConcurrencyError as exc:
                        raise MigrationError(
                            f"stream {run[0].stream_id!r} is not contiguous in the source: "
                            f"version {run[0].version} follows version {exc.actual_version} "
                            "in the target"
                        ) from exc
        for record in kept:
            self.digest.update(_identity(record))
        self.written += len(kept)

    def _converted(self, record: EventRecord) -> EventRecord | None:
        self.read += 1
        try:
            out = self.transform(record)
        except Exception as exc:  # user code: name the record it failed on
            raise MigrationError(
                f"the transform failed on {record.describe()}: {exc!r}; nothing after the "
                "last finished batch was written"
            ) from exc
        if out is None:
            self.shift[record.stream_id] = self.shift.get(record.stream_id, 0) + 1
            return None
        if not isinstance(out, EventRecord):
            raise MigrationError(
                f"the transform returned {type(out).__name__} for {record.describe()}: "
                "return an EventRecord (dataclasses.replace(record, ...)) or None to drop it"
            )
        kept = (out.event_id, out.stream_id, out.occurred_at)
        if kept != (record.event_id, record.stream_id, record.occurred_at):
            raise MigrationError(
                f"the transform changed the event id, stream or time of {record.describe()}: "
                "those are kept as they are; change the payload, type and schema version"
            )
        version = record.version - self.shift.get(record.stream_id, 0)
        return replace(out, version=version, position=0)


def _runs(records: list[EventRecord]) -> Iterator[list[EventRecord]]:
    """Consecutive records of one stream, in order: each run is one append."""
    run = [records[0]]
    for record in records[1:]:
        if record.stream_id != run[0].stream_id:
            yield run
            run = []
        run.append(record)
    yield run


def _identity(record: EventRecord) -> bytes:
    """What the check compares: the payload's JSON text may be normalised by the target."""
    return (
        f"{record.event_id}\x1f{record.stream_id}\x1f{record.version}\x1f{record.event_type}"
        f"\x1f{record.schema_version}\x1f{record.occurred_at.timestamp()!r}\x1e".encode()
    )


def _verify(source: MigrationEnd, target: MigrationEnd, copier: _Copier) -> None:
    in_source = source.events.count()
    if in_source != copier.read:
        raise MigrationError(
            f"the source {source.database.describe()} holds {in_source} events, but "
            f"{copier.read} were read: a writer was still appending to it (stop the writers "
            "and migrate again into a new, empty store), or a gap in its log never closed"
        )
    digest, count = hashlib.sha256(), 0
    for record in iter_log(target.events, 0, 1000):
        digest.update(_identity(record))
        count += 1
    if count != copier.written or digest.digest() != copier.digest.digest():
        raise MigrationError(
            f"the target {target.database.describe()} holds {count} events, but "
            f"{copier.written} were written"
            + ("" if count != copier.written else " (the same number, different events)")
            + ": was something else writing to it? Do not switch over to it"
        )

"""Partitioned projections: one projection run by several workers, each owning a share.

Every aggregate belongs to one of ``partitions`` parts of a projection: the stable hash of
its stream id (CRC-32, as the outbox's lanes) modulo the count. Each part has its own
checkpoint, a row named ``<projection>#<part>`` in the checkpoints table, and is leased
(the set ``projection:<projection>``, ``partitions`` slots) to one worker at a time
through the lease component, as the relays lease their lanes. A worker reads a page of
the global log once, applies the events of the parts it holds, in position order, and
moves those parts' checkpoints, all in one transaction that first checks, with
``holds``, that it still holds them under their fencing tokens. So every event is
applied once by the owner of its aggregate's part, and the events of one aggregate in
their order; a worker that stalled past its lease writes nothing.

The count of parts is fixed for a projection: it is recorded by the parts' checkpoint
rows, and a runner given another count is refused (the aggregates would move between
parts, and so between checkpoints).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any

from tidings.application.merging import MergingWork
from tidings.application.projections.definition import Projection
from tidings.application.projections.runner import (
    SEPARATOR,
    ProjectionRunner,
    _HandlerFailedError,
)
from tidings.domain.projection_state import PAUSED, RUNNING, Checkpoint
from tidings.errors import (
    ProjectionConflictError,
    ProjectionError,
    ServerUnavailableError,
    StorageError,
)
from tidings.ports import Leases, renew_interval
from tidings.records import EventRecord, partition_of

log = logging.getLogger(__name__)


def part_name(name: str, part: int) -> str:
    """The checkpoint name of one part of a projection."""
    return f"{name}{SEPARATOR}{part}"


def lease_set(name: str) -> str:
    """The lease set of a projection's parts."""
    return f"projection:{name}"


class _LostLeaseError(Exception):
    """The batch's transaction found a part taken over: nothing of it was written."""


class PartitionedRunner(ProjectionRunner):
    """A ``ProjectionRunner`` that runs its share of each projection's ``partitions``
    parts; start several (threads, processes, machines) with the same count and they
    share the parts fairly, taking over a stopped one's at once and a dead one's after
    ``ttl`` seconds. ``owner`` names this worker in the leases (unique per worker)."""

    def __init__(
        self,
        store: Any,
        projections: Iterable[Projection],
        checkpoints: Any,
        head: Any,
        signal: Any,
        *,
        leases: Leases,
        partitions: int,
        ttl: float = 15.0,
        **options: Any,
    ) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ProjectionError(
                f"partitions must be a whole number of at least 1 (got {partitions!r}); "
                "every worker of a projection must be given the same count"
            )
        if not ttl > 0:
            raise ProjectionError(f"ttl must be above 0 seconds (got {ttl!r})")
        super().__init__(store, projections, checkpoints, head, signal, **options)
        self.partitions = partitions
        self.ttl = float(ttl)
        self._leases = leases
        self._held: dict[str, dict[int, int]] = {name: {} for name in self._projections}
        self._renew_at = 0.0
        self.lost_leases = 0

    @property
    def names(self) -> list[str]:
        """The checkpoint names of every part of this runner's projections."""
        return [part_name(n, p) for n in self._projections for p in range(self.partitions)]

    @property
    def held(self) -> dict[str, list[int]]:
        """The parts this worker holds now, per projection."""
        return {name: sorted(parts) for name, parts in self._held.items()}

    def start(self) -> None:
        """Create the tables and every part's checkpoint; refuse a projection recorded
        with another count of parts, or another version."""
        for p in self._projections.values():
            with self._store.unit_of_work() as uow:
                for statement in p.schema:
                    uow.execute(statement)
                stored = self._parts_stored(uow, p.name)
                if stored and len(stored) != self.partitions:
                    raise ProjectionError(
                        f"projection {p.name!r} runs in {len(stored)} partitions and this "
                        f"runner was given {self.partitions}: give every worker "
                        f"--partitions {len(stored)} (to change the count, reset each "
                        f"{p.name}{SEPARATOR}N checkpoint and empty its tables)"
                    )
                plain = self._checkpoints.get(uow, p.name)
                if plain is not None and plain.position:
                    raise ProjectionError(
                        f"projection {p.name!r} was run unpartitioned up to position "
                        f"{plain.position}: run it without --partitions, or empty its "
                        f"tables and run tidings projections reset {p.name} first"
                    )
                for part in range(self.partitions):
                    found = self._checkpoints.ensure(
                        uow, part_name(p.name, part), p.version, p.lag_threshold
                    )
                    if found.version != p.version:
                        raise ProjectionError(
                            f"projection {p.name!r} was built by version {found.version} "
                            f"and the code is version {p.version}: empty its tables and "
                            f"reset each of its {self.partitions} partitions"
                        )
        self._started = True

    def run_once(self) -> int:
        """Renew the leases when due, then apply one page of the log to the parts held;
        return how many events were read."""
        if not self._started:
            self.start()
        self._renew()
        done = 0
        for name, p in self._projections.items():
            held = dict(self._held[name])
            if not held:
                continue
            with self._store.unit_of_work() as uow:
                mine = {
                    c.name: c
                    for c in self._parts_stored(uow, name)
                    if c.name in {part_name(name, part) for part in held}
                }
            active = {
                part: mine[part_name(name, part)]
                for part in held
                if part_name(name, part) in mine and mine[part_name(name, part)].state != PAUSED
            }
            if not active:
                continue
            try:
                moved = self._advance_parts(p, held, active)
            except _LostLeaseError:
                self.lost_leases += 1
                self._renew_at = 0.0  # renew first at the next pass
                log.warning("projection %s: a partition was taken over; renewing", name)
                continue
            except ProjectionConflictError as exc:
                log.warning("%s", exc)
                continue
            if moved:
                self.progress.moved()  # wakes read-your-writes waiters in this process
            done += moved
        self.applied += done
        return done

    def _renew(self) -> None:
        now = self._clock()
        if now < self._renew_at:
            return
        for name in self._projections:
            self._held[name] = self._leases.lease(
                self.runner_id, lease_set(name), self.partitions, self.ttl, now
            )
        self._renew_at = now + renew_interval(self.ttl)

    def _advance_parts(
        self, p: Projection, tokens: dict[int, int], active: dict[int, Checkpoint]
    ) -> int:
        start = min(c.position for c in active.values())
        page = self._store.events.read_all(start, self.batch)
        if not page:
            return 0
        stops: dict[int, tuple[EventRecord, str]] = {}  # part -> the event it fails on
        merged = True  # as the runner: pipelined, runs merged; one statement at a time after
        while True:  # each failure stops one more part (or ends the merging): this ends
            try:
                self._commit_parts(p, tokens, active, page, stops, merged=merged)
                break
            except _PartFailedError as failed:
                if merged:  # a merged run's error may be an earlier event's: find it
                    merged = False
                    continue
                stops[failed.part] = (failed.record, failed.error)
            except StorageError as exc:  # met when the held run went out, at the end
                if not merged or isinstance(exc, ServerUnavailableError):
                    raise
                merged = False
        for part, (record, error) in sorted(stops.items()):
            log.error(
                "projection %s paused on the event at position %d (%s, %s): %s; fix the "
                "handler, then: tidings projections retry %s",
                part_name(p.name, part),
                record.position,
                record.event_id,
                record.event_type,
                error.splitlines()[0] if error else error,
                part_name(p.name, part),
            )
        return len(page)

    def _commit_parts(
        self,
        p: Projection,
        tokens: dict[int, int],
        active: dict[int, Checkpoint],
        page: Sequence[EventRecord],
        stops: dict[int, tuple[EventRecord, str]],
        *,
        merged: bool = False,
    ) -> None:
        """One transaction: check the leases, apply each active part's events of the
        page after its checkpoint (up to its failed event, if it has one), move or pause
        each part's checkpoint. ``merged``: pipelined on PostgreSQL, and consecutive
        writes of the same SQL sent as one ``executemany`` (``MergingWork``)."""
        end = page[-1].position
        with self._store.unit_of_work() as uow:
            if not self._leases.holds(uow.transaction, self.runner_id, lease_set(p.name), tokens):
                raise _LostLeaseError
            with uow.transaction.pipeline() if merged else nullcontext():
                work = MergingWork(uow) if merged else uow
                self._apply_page(p, work, active, page, stops)
                if merged:
                    work.flush()
            for part, checkpoint in active.items():
                if end <= checkpoint.position:
                    continue
                name = part_name(p.name, part)
                stop = stops.get(part)
                if stop is None:
                    self._checkpoints.advance(
                        uow,
                        name,
                        start=checkpoint.position,
                        end=end,
                        now=self._clock(),
                        runner=self.runner_id,
                    )
                else:
                    record, error = stop
                    self._checkpoints.pause(
                        uow,
                        name,
                        start=checkpoint.position,
                        end=max(checkpoint.position, record.position - 1),
                        failed=record,
                        error=error,
                        now=self._clock(),
                    )

    def _apply_page(
        self,
        p: Projection,
        uow: Any,
        active: dict[int, Checkpoint],
        page: Sequence[EventRecord],
        stops: dict[int, tuple[EventRecord, str]],
    ) -> None:
        """Apply each active part's events of the page after its checkpoint, up to its
        failed event if it has one."""
        for index, record in enumerate(page):
            part = partition_of(record.stream_id, self.partitions)
            checkpoint = active.get(part)
            if checkpoint is None or record.position <= checkpoint.position:
                continue
            stop = stops.get(part)
            if stop is not None and record.position >= stop[0].position:
                continue
            try:
                self._apply(p, uow, record, index)
            except _HandlerFailedError as failed:
                raise _PartFailedError(part, record, failed.error) from failed

    def beat(self, state: str = RUNNING) -> None:
        """Note this worker alive (or stopped) on the parts it holds."""
        names = [part_name(n, part) for n, parts in self._held.items() for part in parts]
        with self._store.unit_of_work() as uow:
            self._checkpoints.beat(uow, names, self._clock(), self.runner_id, state)

    def run(self, stop: threading.Event) -> None:
        """Follow the log until ``stop`` is set, then give the parts back at once."""
        try:
            super().run(stop)
        finally:
            self.release()

    def release(self) -> None:
        """Give back every part this worker holds, so the others take them at once."""
        for name in self._projections:
            try:
                self._leases.release(self.runner_id, lease_set(name))
            except (StorageError, OSError) as exc:
                log.warning("projection %s: could not release its partitions: %s", name, exc)
            self._held[name] = {}
        self._renew_at = 0.0


class _PartFailedError(Exception):
    """A handler failed on ``record`` of ``part``."""

    def __init__(self, part: int, record: EventRecord, error: str) -> None:
        super().__init__(error)
        self.part, self.record, self.error = part, record, error

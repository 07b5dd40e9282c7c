"""The projection runner: catches each projection up from its checkpoint, then follows.

Each projection reads the event store's gap-free global log (``read_all``) from its own
checkpoint and applies a batch in one unit of work: the read-model writes and the move of
the checkpoint commit together, or neither does. So a runner killed mid-batch leaves the
read model at the last committed checkpoint, and the batch is applied again, once.

A handler that raises (or an event that cannot be decoded) pauses its projection alone:
the events before it are applied and the checkpoint stops just before it, with the
event, its position and the error recorded; the other projections go on. ``retry`` or
``skip`` (after a fix) resumes it exactly there. An operator may also ``pause`` one by hand
(who and why are kept as its error, with no failed event); ``retry`` resumes it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from tidings.application.merging import MergingWork
from tidings.application.projections.definition import Handler, Projection
from tidings.application.projections.status import LagAlarm, ProjectionStatus, status_of
from tidings.application.projections.waiting import Progress, ReadCheckpoint, wait_for
from tidings.domain.projection_state import PAUSED, RUNNING, STOPPED, Checkpoint, Skip
from tidings.errors import (
    ProjectionConflictError,
    ProjectionError,
    ServerUnavailableError,
    StorageError,
    UnknownEventTypeError,
)
from tidings.observability import tracing
from tidings.ports import CommitSignal, ProjectionCheckpoints, ProjectionLog
from tidings.records import EventRecord

log = logging.getLogger(__name__)

SEPARATOR = "#"  # never in a projection's name, so a part's checkpoint is never another's

Clock = Callable[[], float]


class _HandlerFailedError(Exception):
    """A handler (or the decoding of a handled event) failed at ``index`` of the batch."""

    def __init__(self, index: int, error: str) -> None:
        super().__init__(error)
        self.index, self.error = index, error


class ProjectionRunner:
    """Runs ``projections`` on ``store``: ``run_once()`` applies one batch of each,
    ``run(stop)`` follows the log until ``stop`` is set; ``status()`` gives the figures,
    ``retry``, ``skip`` and ``reset`` operate them."""

    def __init__(
        self,
        store: Any,
        projections: Iterable[Projection],
        checkpoints: ProjectionCheckpoints,
        head: ProjectionLog,
        signal: CommitSignal,
        *,
        batch: int = 500,
        poll: float = 1.0,
        heartbeat: float = 1.0,
        clock: Clock = time.time,
        on_lag: Callable[[ProjectionStatus], None] | None = None,
        runner_id: str | None = None,
        progress: Progress | None = None,
        read_checkpoint: ReadCheckpoint | None = None,
    ) -> None:
        self._projections: dict[str, Projection] = {}
        for p in projections:
            if not isinstance(p, Projection):
                raise ProjectionError(f"{p!r} is not a tidings Projection")
            if p.name in self._projections:
                raise ProjectionError(f"two projections are named {p.name!r}: names are keys")
            self._projections[p.name] = p
            store.registry.register(*p.handlers)
        for what, value in (("batch", batch), ("poll", poll), ("heartbeat", heartbeat)):
            if not value > 0:
                raise ProjectionError(f"{what} must be above 0 (got {value!r})")
        self._store = store
        self._checkpoints = checkpoints
        self._head = head
        self._signal = signal
        self.batch = int(batch)
        self._poll = poll
        self._beat_every = heartbeat
        self._clock = clock
        self._alarm = LagAlarm(on_lag)
        self.runner_id = runner_id or f"{socket.gethostname()}:{os.getpid()}"
        self._started = False
        self._handlers: dict[tuple[str, str], Handler | None] = {}
        self._swapped: set[str] = set()  # projections a rebuild took over, warned about
        self.applied = 0  # events read and passed to the projections (handled or not)
        self.progress = progress or Progress()  # wakes read-your-writes waiters
        self._read_checkpoint = read_checkpoint

    @property
    def names(self) -> list[str]:
        """The projections this runner runs."""
        return list(self._projections)

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Create each new projection's tables, indexes and checkpoint; refuse a
        projection whose stored version differs from the code's (it needs a rebuild)."""
        for p in self._projections.values():
            with self._store.unit_of_work() as uow:
                found = self._checkpoints.get(uow, p.name)
                if found is None:  # its tables are made once: a rebuild makes the next ones
                    for statement in (*p.schema, *p.indexes):
                        uow.execute(statement)
                found = self._checkpoints.ensure(uow, p.name, p.version, p.lag_threshold)
            if found.version != p.version:
                raise ProjectionError(
                    f"projection {p.name!r} was built by version {found.version} and the code "
                    f"is version {p.version}: build the new version beside the live one and "
                    f"swap them with tidings projections rebuild {p.name} (see docs/cqrs.md)"
                )
        self._started = True

    def run_once(self) -> int:
        """Apply one batch to each projection that is not paused; return how many events
        were read (0: every projection is at the head, or paused)."""
        if not self._started:
            self.start()
        with self._store.unit_of_work() as uow:
            checkpoints = {c.name: c for c in self._checkpoints.listing(uow)}
        done = 0
        for name, p in self._projections.items():
            checkpoint = checkpoints.get(name)
            if checkpoint is None:  # reset meanwhile: made again at position 0
                with self._store.unit_of_work() as uow:
                    checkpoint = self._checkpoints.ensure(uow, name, p.version, p.lag_threshold)
            if checkpoint.state == PAUSED:
                continue
            if checkpoint.version != p.version:  # a rebuild swapped another version in
                if name not in self._swapped:
                    self._swapped.add(name)
                    log.warning(
                        "projection %s is now version %d (rebuilt) and this runner runs "
                        "version %d: it leaves it alone; run the new code's runner",
                        name,
                        checkpoint.version,
                        p.version,
                    )
                continue
            try:
                moved = self._advance(p, checkpoint)
            except ProjectionConflictError as exc:
                log.warning("%s", exc)
                continue
            if moved:
                self.progress.moved()
            done += moved
        self.applied += done
        return done

    def run(self, stop: threading.Event) -> None:
        """Follow the log until ``stop`` is set: a batch after another while there is
        work, then wait for a commit (the relay's signal; ``poll`` seconds at most). A
        heartbeat goes out every ``heartbeat`` seconds, with a lag check."""
        next_beat = 0.0
        pause = 0.0
        try:
            while not stop.is_set():
                try:
                    done = self.run_once()
                    if time.monotonic() >= next_beat:
                        self.beat(RUNNING)
                        self.check_lag()
                        next_beat = time.monotonic() + self._beat_every
                    pause = 0.0
                except (StorageError, OSError) as exc:  # the database is away: wait, retry
                    pause = min(max(pause * 2, 0.1), 5.0)
                    log.warning("projections: %s; trying again in %.1f s", exc, pause)
                    stop.wait(pause)
                    continue
                if not done:
                    wait = min(self._poll, max(next_beat - time.monotonic(), 0.0))
                    self._signal.wait_for_work(wait)
        finally:
            try:
                self.beat(STOPPED)
            except (StorageError, OSError) as exc:
                log.warning("projections: could not record the stop: %s", exc)

    def close(self) -> None:
        """Release the commit signal (a listening connection on PostgreSQL)."""
        self._signal.close()

    def _advance(self, p: Projection, checkpoint: Checkpoint) -> int:
        records = self._store.events.read_all(checkpoint.position, self.batch)
        if not records:
            return 0
        batch: Sequence[EventRecord] = records
        poison: tuple[EventRecord, str] | None = None
        pipelined = True  # statements sent without waiting for each result (PostgreSQL)
        while True:  # each failure shortens the batch (or ends the pipelining): this ends
            try:
                self._commit(p, checkpoint.position, batch, poison, pipelined=pipelined)
                break
            except _HandlerFailedError as failed:
                if pipelined:  # a pipelined error may be an earlier statement's: find it
                    pipelined = False
                    continue
                poison = (batch[failed.index], failed.error)
                batch = batch[: failed.index]
            except StorageError as exc:  # met when the pipeline synced, at the batch's end
                if not pipelined or isinstance(exc, ServerUnavailableError):
                    raise
                pipelined = False
        if poison is not None:
            record, error = poison
            log.error(
                "projection %s paused on the event at position %d (%s, %s): %s; fix the "
                "handler, then: tidings projections retry %s (or skip %s --position %d)",
                p.name,
                record.position,
                record.event_id,
                record.event_type,
                error.splitlines()[0] if error else error,
                p.name,
                p.name,
                record.position,
                extra={
                    "projection": p.name,
                    "position": record.position,
                    "event_id": record.event_id,
                },
            )
        return len(batch)

    def _commit(
        self,
        p: Projection,
        start: int,
        batch: Sequence[EventRecord],
        poison: tuple[EventRecord, str] | None,
        *,
        pipelined: bool = False,
    ) -> None:
        """Apply ``batch`` and move the checkpoint in one unit of work; pause on
        ``poison`` (the event after the batch) in the same one. ``pipelined``: the
        handlers' statements go out without a round trip each (PostgreSQL's pipeline
        mode, synced before the checkpoint moves), and consecutive writes of the same SQL
        as one ``executemany`` (``MergingWork``); on a failure the batch is applied again
        one statement at a time, to find the event that failed."""
        with self._store.unit_of_work() as uow:
            with uow.transaction.pipeline() if pipelined else nullcontext():
                work = MergingWork(uow) if pipelined else uow
                for index, record in enumerate(batch):
                    self._apply(p, work, record, index)
                if pipelined:
                    work.flush()
            end = batch[-1].position if batch else start
            if poison is None:
                self._checkpoints.advance(
                    uow,
                    p.name,
                    start=start,
                    end=end,
                    now=self._clock(),
                    runner=self.runner_id,
                    version=p.version,
                )
            else:
                record, error = poison
                self._checkpoints.pause(
                    uow, p.name, start=start, end=end, failed=record, error=error, now=self._clock()
                )

    def _apply(self, p: Projection, uow: Any, record: EventRecord, index: int) -> None:
        handler = self._handler(p, record.event_type)
        if handler is None:
            return
        try:
            with tracing.applying(p.name, record):
                handler(uow, self._store.decode(record))
        except ServerUnavailableError:
            raise  # an outage, not this event's fault: the batch is tried again later
        except Exception as exc:  # any failure of the user's code pauses it
            text = "".join(traceback.format_exception_only(exc)).strip()
            raise _HandlerFailedError(index, f"{text}\n{_where(exc)}".strip()) from exc

    def _handler(self, p: Projection, event_type: str) -> Handler | None:
        """The projection's handler of a stored type name (old names of a renamed class
        included), or None when it ignores that type; types no class is registered for
        belong to nobody here."""
        key = (p.name, event_type)
        if key not in self._handlers:
            handler = None
            if event_type in self._store.registry:
                try:
                    cls = self._store.registry.resolve(event_type, 1)
                except UnknownEventTypeError:
                    cls = None
                handler = p.handlers.get(cls) if cls is not None else None
            self._handlers[key] = handler
        return self._handlers[key]

    # -- figures -----------------------------------------------------------------------

    def beat(self, state: str = RUNNING) -> None:
        """Note this runner alive (or stopped) on its projections' checkpoints."""
        with self._store.unit_of_work() as uow:
            self._checkpoints.beat(uow, self.names, self._clock(), self.runner_id, state)

    def status(self, names: Iterable[str] | None = None) -> list[ProjectionStatus]:
        """The figures of the named projections (every checkpoint in the store if None)."""
        now = self._clock()
        wanted = None if names is None else set(names)
        with self._store.unit_of_work() as uow:
            found = [
                c for c in self._checkpoints.listing(uow) if wanted is None or c.name in wanted
            ]
            return [status_of(c, self._head.head(uow, c.position), now) for c in found]

    def check_lag(self) -> list[ProjectionStatus]:
        """Look at this runner's projections; warn and call the alert hook for each that
        has just crossed its lag threshold; return those now over it."""
        statuses = self.status(self.names)
        for s in statuses:
            self._alarm.consider(s)
        return [s for s in statuses if s.lagging]

    def wait_for(self, token: int | None, projection: str, timeout: float = 5.0) -> int:
        """Read-your-writes: block until ``projection`` has applied position ``token``
        (``uow.position`` after a commit) and return its position; woken by this
        process's runners at once, by others' through a short poll of the checkpoint.
        Raises ``ProjectionTimeoutError`` after ``timeout`` seconds, saying where the
        projection stands (paused on an event, no runner, or how far behind)."""
        return wait_for(self._checkpoint_of, self.progress, token, projection, timeout)

    def _checkpoint_of(self, name: str) -> Checkpoint | None:
        if self._read_checkpoint is not None:
            return self._read_checkpoint(name)
        with self._store.unit_of_work() as uow:
            return self._checkpoints.get(uow, name)

    # -- operating ---------------------------------------------------------------------

    def pause(self, name: str, by: str, note: str = "") -> Checkpoint:
        """Hold a projection by hand: every runner leaves it alone (a batch under way is
        rolled back) until ``retry``. Who and why are kept as its error."""
        with self._store.unit_of_work() as uow:
            self._checkpoints.lock(uow, name)
            found = self._checkpoints.get(uow, name)
            if found is None or found.state not in (RUNNING, STOPPED):
                said = "there is none" if found is None else f"it is {found.state}"
                raise ProjectionError(
                    f"projection {name!r} cannot be paused: {said}; see tidings projections "
                    "status (a paused one is resumed with retry)"
                )
            now = self._clock()
            why = f"paused by {by}" + (f": {note}" if note else "")
            self._checkpoints.put(
                uow, replace(found, state=PAUSED, error=why, failed_at=now, updated_at=now)
            )
        log.warning("projection %s paused by %s at position %d", name, by, found.position)
        return found

    def retry(self, name: str) -> Checkpoint:
        """Resume a paused projection: its failed event is applied again first."""
        with self._store.unit_of_work() as uow:
            found = self._checkpoints.resume(uow, name, self._clock())
        log.info("projection %s resumed %s", name, resumes(found))
        return found

    def called(self, name: str) -> list[str]:
        """The checkpoints ``name`` stands for: its own, or, for a projection run in parts
        (``--partitions``) and named without a part, each part's (``name#0``, ``name#1``,
        ...); ``[name]`` when there is neither (the action then says there is none)."""
        with self._store.unit_of_work() as uow:
            if self._checkpoints.get(uow, name) is not None:
                return [name]
            parts = [c.name for c in self._parts_stored(uow, name)]
        return sorted(parts, key=lambda part: int(part.rsplit(SEPARATOR, 1)[1])) or [name]

    def _parts_stored(self, uow: Any, name: str) -> list[Checkpoint]:
        """The checkpoints of ``name``'s parts, as a partitioned runner keeps them."""
        prefix = name + SEPARATOR
        return [c for c in self._checkpoints.listing(uow) if c.name.startswith(prefix)]

    def skip(self, name: str, position: int, by: str, note: str = "") -> Skip:
        """Pass over the event a paused projection failed on (recorded, with the error)."""
        with self._store.unit_of_work() as uow:
            skipped = self._checkpoints.skip(
                uow, name, position=position, by=by, note=note, now=self._clock()
            )
        log.warning("projection %s skipped the event at position %d (by %s)", name, position, by)
        return skipped

    def skips(self, name: str) -> list[Skip]:
        """The events skipped in ``name``, oldest first."""
        with self._store.unit_of_work() as uow:
            return self._checkpoints.skips(uow, name)

    def reset(self, name: str) -> bool:
        """Forget a projection's checkpoint: it starts again from position 0 (empty its
        tables first). False when it had none."""
        with self._store.unit_of_work() as uow:
            return self._checkpoints.remove(uow, name)


def resumes(paused: Checkpoint) -> str:
    """Where a paused projection goes on: at its failed event, or after its position when
    it was paused by hand."""
    if paused.failed_event_id:
        return f"at position {paused.failed_position} (event {paused.failed_event_id})"
    return f"after position {paused.position}"


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback: the line of the handler that failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"at {last.filename}:{last.lineno} in {last.name}"

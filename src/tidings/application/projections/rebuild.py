"""Blue/green rebuilds: a projection's new version is built into shadow tables while the
live one serves, verified against it if asked, and swapped in atomically.

The shadow of table ``t`` is ``t__new``; at the swap, in one transaction, ``t`` becomes
``t__old`` and ``t__new`` becomes ``t``, and the checkpoint takes the new version and
the shadow's position. Renames are transactional DDL on SQLite and PostgreSQL both, so a
reader sees the old tables or the new ones, never a mix, and the read model's queries
keep their table names. ``rollback`` renames back; ``drop_old`` drops ``t__old``.

The handlers write the shadow through a unit of work that renames the projection's
tables (those its ``schema`` creates) in every statement, outside string literals: the
projection is written once, with its real table names. The shadow's progress is its own
checkpoint row, ``NAME~rebuild`` (state ``rebuilding``), committed with each batch, so a
rebuild killed halfway goes on from there. A replay calls nothing but the handlers (no
lag hook, no bus): handlers are select-and-transform and must not call out.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tidings.application.projections.bulk import BulkWork, renamed
from tidings.application.projections.definition import Handler, Projection
from tidings.application.projections.verify import Difference, differences
from tidings.domain.projection_state import REBUILDING, STOPPED, Checkpoint
from tidings.errors import ProjectionError, ServerUnavailableError, UnknownEventTypeError
from tidings.ports import ProjectionCheckpoints, ProjectionLog
from tidings.records import EventRecord

log = logging.getLogger("tidings.projections")

SHADOW, OLD, ALT = "__new", "__old", "__alt"
REBUILD_ROW, OLD_ROW = "~rebuild", "~old"  # '~' is never in a projection's name


class VerifyError(ProjectionError):
    """The shadow differs from the live read model: the swap was refused."""

    def __init__(self, name: str, found: list[Difference], total: int) -> None:
        self.differences, self.total = found, total
        lines = "\n".join(f"  {d.describe()}" for d in found)
        super().__init__(
            f"projection {name!r}: the rebuilt version differs from the live read model in "
            f"{total} row(s), so it was not swapped in; the first ones:\n{lines}\n"
            "the live version goes on serving; fix the new version, then rebuild again with "
            "--restart (the shadow holds what the wrong handlers wrote)"
        )


@dataclass(frozen=True)
class Progress:
    """Where a rebuild is: the shadow's position and the log's head."""

    name: str
    version: int
    position: int
    head: int


def shadow_names(tables: Sequence[str], suffix: str) -> dict[str, str]:
    """Each table's name with ``suffix``."""
    return {t: f"{t}{suffix}" for t in tables}


class Rebuild:
    """Builds ``projection`` (its new version) into shadow tables of ``store`` and swaps
    it in: ``begin``, ``step`` / ``catch_up``, ``swap(verify=)``; then ``rollback`` or
    ``drop_old``. Each step commits, so a process killed anywhere goes on with ``begin``."""

    def __init__(
        self,
        store: Any,
        projection: Projection,
        checkpoints: ProjectionCheckpoints,
        head: ProjectionLog,
        *,
        batch: int = 5000,
        clock: Callable[[], float] = time.time,
        runner_id: str | None = None,
    ) -> None:
        if not isinstance(projection, Projection):
            raise ProjectionError(f"{projection!r} is not a tidings Projection")
        if not projection.tables:
            raise ProjectionError(
                f"projection {projection.name!r} creates no tables in its schema (CREATE "
                "TABLE ...): there is nothing to rebuild"
            )
        for name in (*projection.tables, *projection.index_names):
            if len(name) + len(SHADOW) > 63:
                raise ProjectionError(
                    f"projection {projection.name!r}: the name {name!r} is too long for a "
                    f"rebuild, which adds {SHADOW!r}; keep names to 58 characters"
                )
        if batch < 1:
            raise ProjectionError(f"batch must be above 0 (got {batch!r})")
        self._store, self.projection = store, projection
        self._checkpoints, self._head = checkpoints, head
        self.batch, self._clock = batch, clock
        self.runner_id = runner_id or f"{socket.gethostname()}:{os.getpid()}"
        self.name = projection.name
        self.row, self.old_row = self.name + REBUILD_ROW, self.name + OLD_ROW
        self._tables = shadow_names(projection.tables, SHADOW)
        self._handlers: dict[str, Handler | None] = {}
        store.registry.register(*projection.handlers)
        self.applied = 0

    # -- building ---------------------------------------------------------------------

    def begin(self, *, restart: bool = False) -> Checkpoint:
        """Start the rebuild (empty shadow tables, position 0) or go on with the one
        under way; ``restart`` drops a rebuild under way and starts again."""
        p = self.projection
        with self._store.unit_of_work() as uow:
            if self._checkpoints.get(uow, self.old_row) is not None:
                raise ProjectionError(
                    f"projection {self.name!r}: the tables of the version before the last "
                    f"swap are kept for a rollback; drop them first (tidings projections "
                    f"drop-old {self.name}) or roll back (tidings projections rollback "
                    f"{self.name})"
                )
            found = self._checkpoints.get(uow, self.row)
            if found is not None and not restart:
                if found.version != p.version:
                    raise ProjectionError(
                        f"projection {self.name!r}: a rebuild to version {found.version} is "
                        f"under way and the code is version {p.version}; go on with that "
                        f"code, or start again with --restart"
                    )
                now = self._clock()  # this run's rate counts from here
                found = replace(
                    found, started_at=now, started_position=found.position, heartbeat=now
                )
                self._checkpoints.put(uow, found)
                return found
            for table in self._tables.values():
                uow.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in p.schema:
                if not _is_index(statement):
                    uow.execute(renamed(statement, self._tables))
            now = self._clock()
            fresh = Checkpoint(
                self.row, p.version, 0, REBUILDING, p.lag_threshold, now, self.runner_id,
                updated_at=now, started_at=now,
            )  # fmt: skip
            self._checkpoints.put(uow, fresh)
        log.info("projection %s: rebuilding version %d from position 0", self.name, p.version)
        return fresh

    def step(self, *, until_live: bool = False) -> int:
        """Apply one batch of the log to the shadow and move its checkpoint, in one
        transaction; return how many events were read (0: at the head). ``until_live``:
        not past the live version's position (what ``swap(verify=True)`` compares at)."""
        with self._store.unit_of_work() as uow:
            shadow = self._shadow(uow)
            records = self._store.events.read_all(shadow.position, self.batch)
            live = self._checkpoints.get(uow, self.name) if until_live else None
            if live is not None:
                records = [r for r in records if r.position <= live.position]
            if not records:
                return 0
            self._apply(uow, records)
            self._checkpoints.put(
                uow,
                replace(
                    shadow,
                    position=records[-1].position,
                    heartbeat=self._clock(),
                    runner=self.runner_id,
                    updated_at=self._clock(),
                ),
            )
        self.applied += len(records)
        return len(records)

    def catch_up(
        self, stop: Callable[[], bool] = lambda: False, *, until_live: bool = False
    ) -> int:
        """Apply batches until one comes short of ``batch`` (the shadow is at the head,
        or close: writers may go on committing, and the swap applies the rest), or until
        ``stop()`` says so. ``until_live`` (for a verified swap): the shadow stays at or
        behind the live version, whose runner a writer may keep busy, so that the swap
        brings the shadow to the live position and compares the two there."""
        total = 0
        while not stop():
            done = self.step(until_live=until_live)
            total += done
            if done < self.batch:
                break
        return total

    def progress(self) -> Progress:
        """The shadow's position and the log's head."""
        with self._store.unit_of_work() as uow:
            shadow = self._shadow(uow)
            head = self._head.head(uow, shadow.position)
        return Progress(self.name, shadow.version, shadow.position, head.head)

    # -- swapping ---------------------------------------------------------------------

    def swap(self, *, verify: bool = False) -> Checkpoint:
        """Bring the shadow to the live projection's position, compare the two row by row
        if ``verify`` (``VerifyError`` on a difference, nothing swapped), and swap them in
        one transaction. Returns the new live checkpoint."""
        self._create_indexes()
        with self._store.unit_of_work() as uow:
            shadow = self._shadow(uow)
            live_tables = [t for t in self._tables if _exists(uow, t, "table")]
            if uow.dialect == "postgresql" and live_tables:  # the live runner's writes
                # wait, its readers do not, and the runner cannot deadlock with the renames
                uow.execute(f"LOCK TABLE {', '.join(live_tables)} IN EXCLUSIVE MODE")
            self._checkpoints.lock(uow, self.name)
            live = self._checkpoints.get(uow, self.name)
            position = shadow.position
            if live is not None and live.position > position:  # its tail, in this transaction
                position = self._apply_until(uow, position, live.position)
            if verify:
                if live is not None and live.position != position:
                    raise ProjectionError(
                        f"projection {self.name!r}: the live read model is at position "
                        f"{live.position}, behind the rebuilt one at {position}; --verify "
                        "compares the two at one position: start its runner, let it catch "
                        "up, and swap again"
                    )
                found, total = differences(uow, self._tables, live_tables)
                if total:
                    raise VerifyError(self.name, found, total)
            for table, shadow_table in self._tables.items():
                if table in live_tables:
                    uow.execute(f"ALTER TABLE {table} RENAME TO {table}{OLD}")
                uow.execute(f"ALTER TABLE {shadow_table} RENAME TO {table}")
            now = self._clock()
            if live is not None:
                self._checkpoints.put(uow, replace(live, name=self.old_row, updated_at=now))
            swapped = Checkpoint(
                self.name, shadow.version, position, STOPPED,
                live.lag_threshold if live else shadow.lag_threshold, updated_at=now,
            )  # fmt: skip
            self._checkpoints.put(uow, swapped)
            self._checkpoints.remove(uow, self.row)
        log.info(
            "projection %s: version %d swapped in at position %d%s",
            self.name,
            swapped.version,
            position,
            " (verified)" if verify else "",
        )
        return swapped

    def rollback(self) -> Checkpoint:
        """Swap the old version's tables and checkpoint back in; the rebuilt tables are
        dropped."""
        with self._store.unit_of_work() as uow:
            old = self._checkpoints.get(uow, self.old_row)
            if old is None:
                raise ProjectionError(
                    f"projection {self.name!r} has no old version kept to roll back to "
                    "(none was swapped out, or it was dropped)"
                )
            tables = [t for t in self._tables if _exists(uow, t + OLD, "table")]
            for table in tables:
                uow.execute(f"ALTER TABLE {table} RENAME TO {table}{SHADOW}")
                uow.execute(f"ALTER TABLE {table}{OLD} RENAME TO {table}")
            self._checkpoints.put(uow, replace(old, name=self.name, updated_at=self._clock()))
            self._checkpoints.remove(uow, self.old_row)
        with self._store.unit_of_work() as uow:  # apart: a big drop would hold the swap
            for table in tables:
                uow.execute(f"DROP TABLE IF EXISTS {table}{SHADOW}")
        log.warning("projection %s: rolled back to version %d", self.name, old.version)
        return replace(old, name=self.name)

    def drop_old(self) -> list[str]:
        """Drop the tables of the version swapped out (no rollback after this)."""
        with self._store.unit_of_work() as uow:
            if self._checkpoints.get(uow, self.old_row) is None:
                raise ProjectionError(
                    f"projection {self.name!r} keeps no old version: nothing to drop"
                )
            dropped = [t + OLD for t in self._tables if _exists(uow, t + OLD, "table")]
            for table in dropped:
                uow.execute(f"DROP TABLE {table}")
            self._checkpoints.remove(uow, self.old_row)
        return dropped

    # -- the pieces -------------------------------------------------------------------

    def _shadow(self, uow: Any) -> Checkpoint:
        found = self._checkpoints.get(uow, self.row)
        if found is None:
            raise ProjectionError(
                f"projection {self.name!r} has no rebuild under way: start one with "
                f"tidings projections rebuild {self.name}"
            )
        return found

    def _create_indexes(self) -> None:
        """The indexes, on the loaded shadow: each under its own name, or (taken by the
        live table's index) under ``name__alt``; the next rebuild takes the other."""
        statements = [
            s for s in (*self.projection.schema, *self.projection.indexes) if _is_index(s)
        ]
        if not statements:
            return
        with self._store.unit_of_work() as uow:
            self._shadow(uow)
            for statement in statements:
                index = _index_name(statement)
                names = dict(self._tables)
                if _exists(uow, index, "index") and not _index_on(uow, index, self._tables):
                    names[index] = index + ALT
                    if _exists(uow, index + ALT, "index") and not _index_on(
                        uow, index + ALT, self._tables
                    ):
                        raise ProjectionError(
                            f"projection {self.name!r}: both {index} and {index}{ALT} exist "
                            "on other tables; drop the one that is not the live table's"
                        )
                uow.execute(renamed(_if_not_exists(statement), names))

    def _apply_until(self, uow: Any, start: int, end: int) -> int:
        """Apply the events after ``start`` up to ``end`` to the shadow, in ``uow``."""
        position = start
        while position < end:
            records = [
                r for r in self._store.events.read_all(position, self.batch) if r.position <= end
            ]
            if not records:
                break
            self._apply(uow, records)
            position = records[-1].position
        return position

    def _apply(self, uow: Any, records: Sequence[EventRecord]) -> None:
        work = BulkWork(uow, self._tables)
        for record in records:
            handler = self._handler(record.event_type)
            if handler is None:
                continue
            try:
                handler(work, self._store.decode(record))
            except ServerUnavailableError:
                raise
            except Exception as exc:  # the user's code: stop, say where
                text = "".join(traceback.format_exception_only(exc)).strip()
                raise ProjectionError(
                    f"projection {self.name!r}: the rebuild stopped on the event at position "
                    f"{record.position} ({record.event_id}, {record.event_type}): {text}; "
                    "the batch was rolled back: fix the handler and run the rebuild again, "
                    "it goes on from its checkpoint"
                ) from exc
        work.flush()

    def _handler(self, event_type: str) -> Handler | None:
        if event_type not in self._handlers:
            handler = None
            if event_type in self._store.registry:
                try:
                    cls = self._store.registry.resolve(event_type, 1)
                except UnknownEventTypeError:
                    cls = None
                handler = self.projection.handlers.get(cls) if cls is not None else None
            self._handlers[event_type] = handler
        return self._handlers[event_type]


def _is_index(statement: str) -> bool:
    return bool(re.match(r"\s*CREATE\s+(UNIQUE\s+)?INDEX\b", statement, re.I))


def _index_name(statement: str) -> str:
    found = re.match(
        r'\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?"?(\w+)"?', statement, re.I
    )
    assert found is not None  # noqa: S101 - _is_index and the Projection checked it
    return found[1].lower()


def _if_not_exists(statement: str) -> str:
    """The index statement made safe to run again (a resumed swap creates it again)."""
    if re.search(r"\bIF\s+NOT\s+EXISTS\b", statement, re.I):
        return statement
    return re.sub(r"\bINDEX\b", "INDEX IF NOT EXISTS", statement, count=1, flags=re.I)


def _exists(uow: Any, name: str, kind: str) -> bool:
    """Whether a table or an index of that name is in the current schema."""
    if uow.dialect == "postgresql":
        relkind = "r" if kind == "table" else "i"
        sql = (
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = :name AND c.relkind = :kind AND n.nspname = current_schema()"
        )
        return uow.execute(sql, {"name": name, "kind": relkind}).fetchone() is not None
    sql = "SELECT 1 FROM sqlite_master WHERE type = :kind AND name = :name"
    return uow.execute(sql, {"name": name, "kind": kind}).fetchone() is not None


def _index_on(uow: Any, index: str, shadows: Mapping[str, str]) -> bool:
    """Whether ``index`` belongs to one of the shadow tables (made before a crash)."""
    if uow.dialect == "postgresql":
        sql = (
            "SELECT tablename FROM pg_indexes WHERE indexname = :name"
            " AND schemaname = current_schema()"
        )
    else:
        sql = "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = :name"
    row = uow.execute(sql, {"name": index}).fetchone()
    return row is not None and str(row[0]).lower() in shadows.values()

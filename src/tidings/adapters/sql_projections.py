"""Projection checkpoints in SQL, the log's head for lag, and the memory backend's pieces.

The checkpoints speak the unit of work's ``:name`` statements, so one adapter serves
SQLite, PostgreSQL and memory:// (whose unit of work runs your statements, and so the read
models and these tables, in an in-process SQLite; there the tables are made on first use).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from tidings.adapters.sql import split_statements
from tidings.domain.projection_state import PAUSED, STOPPED, Checkpoint, LogHead, Skip
from tidings.errors import ProjectionConflictError, ProjectionError
from tidings.ports import CommitSignal, EventStore, ProjectionCheckpoints, ProjectionLog
from tidings.records import EventRecord

_COLUMNS = (
    "name, version, position, state, lag_threshold, heartbeat, runner, error,"
    " failed_position, failed_event_id, failed_event_type, failed_at, updated_at,"
    " started_at, started_position"
)
MEMORY_TABLES = {
    "projections": "tidings_projections",
    "projection_skips": "tidings_projection_skips",
}
POLL = 0.005  # seconds between looks at the memory log's length while waiting


def ddl(names: Mapping[str, str]) -> list[str]:
    """The statements that create the checkpoint tables under ``names``."""
    text = resources.files("tidings.adapters.sqlite").joinpath("projections.sql").read_text()
    return split_statements(text.format(**names))


class SqlCheckpoints:
    """Checkpoints in ``tables['projections']``, skips in ``tables['projection_skips']``;
    every method runs in the unit of work it is given."""

    def __init__(self, tables: Mapping[str, str]) -> None:
        self._table = tables["projections"]
        self._skips = tables["projection_skips"]

    def ensure(self, uow: Any, name: str, version: int, lag_threshold: float) -> Checkpoint:
        """The checkpoint of ``name``, created at position 0 (stopped) if missing; the
        threshold is the code's (it may have changed since)."""
        uow.execute(
            f"INSERT INTO {self._table} ({_COLUMNS}) VALUES (:name, :version, 0, :state,"
            " :threshold, 0, '', '', 0, '', '', 0, 0, 0, 0) ON CONFLICT (name) DO NOTHING",
            {"name": name, "version": version, "state": STOPPED, "threshold": lag_threshold},
        )
        uow.execute(
            f"UPDATE {self._table} SET lag_threshold = :threshold WHERE name = :name",
            {"name": name, "threshold": lag_threshold},
        )
        found = self.get(uow, name)
        assert found is not None  # noqa: S101 - inserted or there already, in this transaction
        return found

    def get(self, uow: Any, name: str) -> Checkpoint | None:
        """The stored checkpoint, or None."""
        row = uow.execute(
            f"SELECT {_COLUMNS} FROM {self._table} WHERE name = :name", {"name": name}
        ).fetchone()
        return None if row is None else _checkpoint(row)

    def listing(self, uow: Any) -> list[Checkpoint]:
        """Every checkpoint, by name."""
        rows = uow.execute(f"SELECT {_COLUMNS} FROM {self._table} ORDER BY name").fetchall()
        return [_checkpoint(r) for r in rows]

    def advance(
        self,
        uow: Any,
        name: str,
        *,
        start: int,
        end: int,
        now: float,
        runner: str,
        version: int | None = None,
    ) -> None:
        """Move from ``start`` to ``end`` and note the runner alive, unless the checkpoint
        is paused, was moved elsewhere, or (given ``version``) was swapped to another
        version by a rebuild: then ``ProjectionConflictError``."""
        moved = uow.execute(
            f"UPDATE {self._table} SET position = :end, state = 'running', heartbeat = :now,"
            " runner = :runner, updated_at = :now"
            " WHERE name = :name AND position = :start AND state <> :paused"
            + ("" if version is None else " AND version = :version"),
            {
                "name": name,
                "start": start,
                "end": end,
                "now": now,
                "runner": runner,
                "paused": PAUSED,
                "version": version,
            },
        )
        if moved.rowcount != 1:
            raise ProjectionConflictError(
                f"projection {name!r} was moved from position {start} (or paused, or swapped "
                "to another version) by someone else while this batch ran; the batch was "
                "rolled back"
            )

    def pause(
        self,
        uow: Any,
        name: str,
        *,
        start: int,
        end: int,
        failed: EventRecord,
        error: str,
        now: float,
    ) -> None:
        """Move from ``start`` to ``end`` (the events before the failed one) and pause on
        ``failed`` with ``error``."""
        moved = uow.execute(
            f"UPDATE {self._table} SET position = :end, state = :paused, error = :error,"
            " failed_position = :fp, failed_event_id = :fid, failed_event_type = :ftype,"
            " failed_at = :now, updated_at = :now"
            " WHERE name = :name AND position = :start AND state <> :paused",
            {
                "name": name,
                "start": start,
                "end": end,
                "paused": PAUSED,
                "error": error,
                "fp": failed.position,
                "fid": failed.event_id,
                "ftype": failed.event_type,
                "now": now,
            },
        )
        if moved.rowcount != 1:
            raise ProjectionConflictError(
                f"projection {name!r} was moved from position {start} by someone else; "
                "its pause was rolled back"
            )

    def resume(self, uow: Any, name: str, now: float) -> Checkpoint:
        """Clear the pause of ``name``; it applies the failed event again next."""
        found = self._paused(uow, name, "retry")
        uow.execute(
            f"UPDATE {self._table} SET state = :stopped, error = '', failed_position = 0,"
            " failed_event_id = '', failed_event_type = '', failed_at = 0, updated_at = :now"
            " WHERE name = :name",
            {"name": name, "stopped": STOPPED, "now": now},
        )
        return found

    def skip(self, uow: Any, name: str, *, position: int, by: str, note: str, now: float) -> Skip:
        """Pass over the event ``name`` paused on, which must be at ``position``; the skip
        is recorded with the error it caused, who and why."""
        found = self._paused(uow, name, "skip")
        if not found.failed_event_id:  # paused by hand: no event failed
            raise ProjectionError(
                f"projection {name!r} was paused by hand ({found.error}), not on an event "
                f"that failed: there is no event to skip; resume it with tidings "
                f"projections retry {name}"
            )
        if found.failed_position != position:
            raise ProjectionError(
                f"projection {name!r} is paused on the event at position "
                f"{found.failed_position}, not {position}: skip only passes over the event "
                f"it paused on (tidings projections skip {name} --position "
                f"{found.failed_position})"
            )
        skipped = Skip(
            name,
            position,
            found.failed_event_id,
            found.failed_event_type,
            found.error,
            now,
            by,
            note,
        )
        uow.execute(
            f"INSERT INTO {self._skips} (name, position, event_id, event_type, error,"
            " skipped_at, by_whom, note) VALUES (:name, :position, :event_id, :event_type,"
            " :error, :at, :by, :note)",
            {
                "name": name,
                "position": position,
                "event_id": skipped.event_id,
                "event_type": skipped.event_type,
                "error": skipped.error,
                "at": now,
                "by": by,
                "note": note,
            },
        )
        uow.execute(
            f"UPDATE {self._table} SET position = :position, state = :stopped, error = '',"
            " failed_position = 0, failed_event_id = '', failed_event_type = '',"
            " failed_at = 0, updated_at = :now WHERE name = :name",
            {"name": name, "position": position, "stopped": STOPPED, "now": now},
        )
        return skipped

    def skips(self, uow: Any, name: str) -> list[Skip]:
        """The events skipped in ``name``, oldest first."""
        rows = uow.execute(
            f"SELECT name, position, event_id, event_type, error, skipped_at, by_whom, note"
            f" FROM {self._skips} WHERE name = :name ORDER BY position",
            {"name": name},
        ).fetchall()
        return [Skip(r[0], int(r[1]), r[2], r[3], r[4], float(r[5]), r[6], r[7]) for r in rows]

    def beat(self, uow: Any, names: Sequence[str], now: float, runner: str, state: str) -> None:
        """Note that ``runner`` is alive (``state``) and holds ``names``; paused stay paused."""
        for name in names:
            uow.execute(
                f"UPDATE {self._table} SET heartbeat = :now, runner = :runner,"
                " state = CASE WHEN state = :paused THEN state ELSE :state END"
                " WHERE name = :name",
                {"name": name, "now": now, "runner": runner, "state": state, "paused": PAUSED},
            )

    def put(self, uow: Any, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` whole, over the stored one of its name if any (a rebuild's
        own row, and the swap of a rebuilt version in and out)."""
        values = {f: getattr(checkpoint, f) for f in _COLUMNS.replace(" ", "").split(",")}
        names = ", ".join(f":{f}" for f in values)
        updates = ", ".join(f"{f} = excluded.{f}" for f in values if f != "name")
        uow.execute(
            f"INSERT INTO {self._table} ({_COLUMNS}) VALUES ({names})"
            f" ON CONFLICT (name) DO UPDATE SET {updates}",
            values,
        )

    def lock(self, uow: Any, name: str) -> None:
        """Hold the row of ``name`` until the transaction ends (a runner's move of it
        waits), where the database locks rows (PostgreSQL; SQLite holds the file)."""
        uow.execute(
            f"UPDATE {self._table} SET updated_at = updated_at WHERE name = :name", {"name": name}
        )

    def remove(self, uow: Any, name: str) -> bool:
        """Forget the checkpoint of ``name`` (its skips stay, as history)."""
        gone = uow.execute(f"DELETE FROM {self._table} WHERE name = :name", {"name": name})
        return bool(gone.rowcount)

    def _paused(self, uow: Any, name: str, action: str) -> Checkpoint:
        found = self.get(uow, name)
        if found is None:
            raise ProjectionError(
                f"no projection is named {name!r} here: see tidings projections status"
            )
        if found.state != PAUSED:
            raise ProjectionError(
                f"projection {name!r} is {found.state}, not paused: there is nothing to {action}"
            )
        return found


class SqlProjectionLog:
    """The head of the events table and commit times (``recorded_at``), read in the unit
    of work's transaction: the SQL backends keep the read models beside the events."""

    def __init__(self, events_table: str) -> None:
        t = events_table
        self._head = f"SELECT position, recorded_at FROM {t} ORDER BY position DESC LIMIT 1"
        self._behind = f"SELECT count(*) FROM {t} WHERE position > :p"
        self._at = (
            f"SELECT recorded_at FROM {t} WHERE position <= :p ORDER BY position DESC LIMIT 1"
        )
        self._after = f"SELECT recorded_at FROM {t} WHERE position > :p ORDER BY position LIMIT 1"

    def head(self, uow: Any, position: int) -> LogHead:
        """The newest committed position and its time; how far ``position`` is behind."""
        top = uow.execute(self._head).fetchone()
        if top is None:
            return LogHead(0, 0.0, 0, 0.0)
        behind = int(uow.execute(self._behind, {"p": position}).fetchone()[0])
        at = uow.execute(self._at if position else self._after, {"p": position}).fetchone()
        if at is None:  # nothing at or before it (a position past holes only): the next one
            at = uow.execute(self._after, {"p": position}).fetchone()
        return LogHead(int(top[0]), _seconds(top[1]), behind, _seconds(at[0]) if at else 0.0)


class MemoryProjectionLog:
    """The memory event store's head; its events have no commit time, so the time each
    occurred stands in (they commit in the order and at about the time they occur)."""

    def __init__(self, events: EventStore) -> None:
        self._events = events

    def head(self, uow: Any, position: int) -> LogHead:
        """The newest position and its time; how far ``position`` is behind."""
        top = self._events.count()  # positions are 1..count: the memory log has no holes
        if not top:
            return LogHead(0, 0.0, 0, 0.0)
        [last] = self._events.read_all(top - 1, 1)
        [at] = self._events.read_all(max(position - 1, 0), 1)
        return LogHead(
            top, last.occurred_at.timestamp(), max(top - position, 0), at.occurred_at.timestamp()
        )


class MemoryCommitSignal:
    """Wakes when the memory log grows: it is looked at every few milliseconds, a read of
    a length under the backend's lock (SQLite's data_version, for the memory backend)."""

    def __init__(self, events: EventStore) -> None:
        self._events = events
        self._seen = events.count()
        self._closed = threading.Event()

    def wait_for_work(self, timeout: float) -> None:
        """Return once the log has grown since the last wait, or after ``timeout``."""
        waited = 0.0
        while waited < timeout and not self._closed.is_set():
            if self._events.count() != self._seen:
                break
            self._closed.wait(min(POLL, timeout - waited))
            waited += POLL
        self._seen = self._events.count()

    def close(self) -> None:
        """Stop waiting."""
        self._closed.set()


def _seconds(value: Any) -> float:
    """A commit time as seconds since the epoch (SQLite keeps ISO text, PostgreSQL a
    timestamptz)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return float(value.timestamp()) if isinstance(value, datetime) else float(value)


def _checkpoint(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        name=r[0],
        version=int(r[1]),
        position=int(r[2]),
        state=r[3],
        lag_threshold=float(r[4]),
        heartbeat=float(r[5]),
        runner=r[6],
        error=r[7],
        failed_position=int(r[8]),
        failed_event_id=r[9],
        failed_event_type=r[10],
        failed_at=float(r[11]),
        updated_at=float(r[12]),
        started_at=float(r[13]),
        started_position=int(r[14]),
    )


def projection_parts(store: Any) -> tuple[ProjectionCheckpoints, ProjectionLog, CommitSignal]:
    """The checkpoints, the log head and the commit signal of a store's backend.

    The signal is the relay's: LISTEN on the commit channel on PostgreSQL (the outbox's
    rows NOTIFY it at commit, and so does every insert of events once the trigger this
    installs is there, with or without an outbox), ``PRAGMA data_version`` on SQLite
    (any commit by another connection), the log's length in memory.
    """
    database = store.database
    tables = getattr(database, "tables", None)
    if tables is None:  # memory://: your statements' tables live in-process
        with store.unit_of_work() as uow:
            for statement in ddl(MEMORY_TABLES):
                uow.execute(statement)
        return (
            SqlCheckpoints(MEMORY_TABLES),
            MemoryProjectionLog(store.events),
            MemoryCommitSignal(store.events),
        )
    from tidings.backends import leases_of, outbox_of

    signal = outbox_of(database, leases_of(database))  # only its wait_for_work is used
    if database.dialect == "postgresql":
        from tidings.adapters.postgres.outbox import install_commit_trigger

        install_commit_trigger(database)
    return SqlCheckpoints(tables), SqlProjectionLog(tables["events"]), signal

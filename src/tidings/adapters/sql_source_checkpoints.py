"""The checkpoints of projections fed by a broker stream, in SQL (see docs/cqrs.md).

One row per projection and source service (the highest source position applied, the
time in the last message and when it was applied) and one row per source position
applied. They speak the unit of work's ``:name`` statements, so one adapter serves
SQLite, PostgreSQL and memory:// (whose statements run in an in-process SQLite).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from tidings.adapters.sql import split_statements
from tidings.adapters.sql_projections import MEMORY_TABLES as CHECKPOINT_TABLES
from tidings.adapters.sql_projections import SqlCheckpoints
from tidings.adapters.sql_projections import ddl as checkpoint_ddl
from tidings.domain.projection_sources import SourceCheckpoint

MEMORY_TABLES = {
    "projection_sources": "tidings_projection_sources",
    "projection_positions": "tidings_projection_positions",
}
_COLUMNS = "name, source, position, event_time, applied_at, positioned, events"


def ddl(names: Mapping[str, str]) -> list[str]:
    """The statements that create the tables under ``names`` (SQLite's dialect)."""
    sql = resources.files("tidings.adapters.sqlite").joinpath("projection_sources.sql")
    return split_statements(sql.read_text().format(**names))


class SqlSourceCheckpoints:
    """The two tables; every method runs in the unit of work it is given."""

    def __init__(self, tables: Mapping[str, str]) -> None:
        self._sources = tables["projection_sources"]
        self._positions = tables["projection_positions"]

    def applied(
        self,
        uow: Any,
        name: str,
        *,
        source: str,
        position: int | None,
        event_time: float,
        now: float,
    ) -> None:
        """Note one message applied: the checkpoint keeps the highest position, and the
        position itself is kept for the waits on it."""
        greatest = "GREATEST" if uow.dialect == "postgresql" else "max"
        uow.execute(
            f"INSERT INTO {self._sources} AS c ({_COLUMNS}) VALUES (:name, :source,"
            " :position, :event_time, :now, :positioned, 1) ON CONFLICT (name, source) DO"
            f" UPDATE SET position = {greatest}(c.position, excluded.position),"
            " event_time = excluded.event_time, applied_at = excluded.applied_at,"
            " positioned = excluded.positioned, events = c.events + 1",
            {
                "name": name,
                "source": source,
                "position": position or 0,
                "event_time": event_time,
                "now": now,
                "positioned": 1 if position else 0,
            },
        )
        if position:
            uow.execute(
                f"INSERT INTO {self._positions} (name, source, position, applied_at)"
                " VALUES (:name, :source, :position, :now) ON CONFLICT DO NOTHING",
                {"name": name, "source": source, "position": position, "now": now},
            )

    def has_applied(self, uow: Any, name: str, source: str, position: int) -> bool:
        """True when ``name`` has applied the event at ``position`` of ``source``."""
        row = uow.execute(
            f"SELECT 1 FROM {self._positions} WHERE name = :name AND source = :source"
            " AND position = :position",
            {"name": name, "source": source, "position": position},
        ).fetchone()
        return row is not None

    def listing(self, uow: Any, name: str | None = None) -> list[SourceCheckpoint]:
        """The checkpoints of ``name`` (of every stream projection if None)."""
        where = "" if name is None else " WHERE name = :name"
        rows = uow.execute(
            f"SELECT {_COLUMNS} FROM {self._sources}{where} ORDER BY name, source",
            {} if name is None else {"name": name},
        ).fetchall()
        return [_source_checkpoint(r) for r in rows]

    def forget_positions(self, uow: Any, before: float) -> int:
        """Delete the kept positions applied before ``before`` (seconds since the epoch);
        return how many. A wait on a token older than that no longer finds it."""
        gone = uow.execute(
            f"DELETE FROM {self._positions} WHERE applied_at < :before", {"before": before}
        )
        return int(gone.rowcount)

    def remove(self, uow: Any, name: str) -> None:
        """Forget everything about ``name`` (before it is built again from a replay)."""
        for table in (self._sources, self._positions):
            uow.execute(f"DELETE FROM {table} WHERE name = :name", {"name": name})


def stream_parts(store: Any) -> tuple[SqlCheckpoints, SqlSourceCheckpoints]:
    """The checkpoints table and the stream projections' tables of ``store`` (made
    in-process on memory://, where your statements' tables live)."""
    tables = getattr(store.database, "tables", None)
    if tables is None:
        with store.unit_of_work() as uow:
            for statement in (*checkpoint_ddl(CHECKPOINT_TABLES), *ddl(MEMORY_TABLES)):
                uow.execute(statement)
        return SqlCheckpoints(CHECKPOINT_TABLES), SqlSourceCheckpoints(MEMORY_TABLES)
    return SqlCheckpoints(tables), SqlSourceCheckpoints(tables)


class SourceReader:
    """The same figures read outside a unit of work, for a waiter that looks many times a
    second while a consumer writes: on SQLite a plain read takes no write lock (a unit of
    work would), on PostgreSQL one statement on a pooled connection."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._checkpoints = stream_parts(store)[1]
        database = store.database
        tables = getattr(database, "tables", None)
        self._query = None if tables is None else database.query
        m = "%s" if database.dialect == "postgresql" else "?"
        names = tables or MEMORY_TABLES
        self._applied = (
            f"SELECT 1 FROM {names['projection_positions']} WHERE name = {m} AND source = {m}"
            f" AND position = {m}"
        )
        self._listing = (
            f"SELECT {_COLUMNS} FROM {names['projection_sources']} WHERE name = {m} ORDER BY source"
        )

    def has_applied(self, name: str, source: str, position: int) -> bool:
        """True when ``name`` has applied the event at ``position`` of ``source``."""
        if self._query is None:
            with self._store.unit_of_work() as uow:
                return self._checkpoints.has_applied(uow, name, source, position)
        return bool(self._query(self._applied, (name, source, position)))

    def listing(self, name: str) -> list[SourceCheckpoint]:
        """The checkpoints of ``name``, one per source."""
        if self._query is None:
            with self._store.unit_of_work() as uow:
                return self._checkpoints.listing(uow, name)
        return [_source_checkpoint(r) for r in self._query(self._listing, (name,))]


def _source_checkpoint(r: Any) -> SourceCheckpoint:
    return SourceCheckpoint(r[0], r[1], int(r[2]), float(r[3]), float(r[4]), bool(r[5]), int(r[6]))

"""A projection's checkpoint read on its own, for waiters (read-your-writes).

A waiter looks at one row many times a second while others write: on SQLite a plain
read on the thread's connection sees the last commit and takes no write lock (a unit of
work would take it, ``BEGIN IMMEDIATE``), on PostgreSQL one statement on a pooled
connection. The memory backend reads under its one lock, as everything there does.
"""

from __future__ import annotations

from typing import Any

from tidings.adapters.sql_projections import _COLUMNS, MEMORY_TABLES, SqlCheckpoints, _checkpoint
from tidings.adapters.sql_projections import ddl as checkpoint_ddl
from tidings.application.projections.waiting import ReadCheckpoint
from tidings.domain.projection_state import Checkpoint


def checkpoint_reader(store: Any) -> ReadCheckpoint:
    """A function giving the stored checkpoint of a projection of ``store`` by name."""
    database = store.database
    tables = getattr(database, "tables", None)
    if tables is None:  # memory://: the checkpoints live in its in-process SQLite
        with store.unit_of_work() as uow:
            for statement in checkpoint_ddl(MEMORY_TABLES):
                uow.execute(statement)
        checkpoints = SqlCheckpoints(MEMORY_TABLES)

        def read_memory(name: str) -> Checkpoint | None:
            with store.unit_of_work() as uow:
                return checkpoints.get(uow, name)

        return read_memory
    mark = "%s" if database.dialect == "postgresql" else "?"
    sql = f"SELECT {_COLUMNS} FROM {tables['projections']} WHERE name = {mark}"

    def read(name: str) -> Checkpoint | None:
        rows = database.query(sql, (name,))
        return _checkpoint(rows[0]) if rows else None

    return read

"""SqliteEventStore: the event log in one SQLite table."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tidings.adapters.sql import iso_utc
from tidings.adapters.sql_event_store import SqlEventStore
from tidings.adapters.sqlite.database import SqliteDatabase, storage_error
from tidings.ports import Params, Transaction
from tidings.records import EventRecord, new_record

ROWS = 100  # rows per INSERT statement: 801 parameters, below even old SQLites' limit of 999
COLUMNS = 8


class SqliteEventStore(SqlEventStore):
    """Writers are serialised by SQLite's write lock, so the version check is exact and a
    batch's positions are consecutive."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database.tables["events"], database.describe())
        self._db = database
        self._insert_head = (
            f"INSERT INTO {self.table} (event_id, stream_id, version, event_type, "
            "schema_version, occurred_at, data, metadata"
        )
        self._inserts: dict[int, str] = {}
        # One row whose version is NULL, which NOT NULL refuses, unless the stream is at
        # ?9. Not INSERT ... SELECT ... WHERE: a SELECT that reads the table it inserts
        # into makes SQLite stage the row in a temporary table, a quarter more work for
        # the whole one-event transaction (counted with callgrind).
        self._guarded_sql = (
            f"{self._insert_head}) VALUES (?1, ?2, CASE WHEN (SELECT coalesce(max(version), 0) "
            f"FROM {self.table} WHERE stream_id = ?2) = ?9 THEN ?3 END, ?4, ?5, ?6, ?7, ?8)"
        )

    def _query(self, sql: str, params: Params) -> list[Any]:
        return self._db.query(sql, params)

    def _current_version(self, tx: Transaction, stream_id: str) -> int:
        row = tx.execute(
            f"SELECT coalesce(max(version), 0) FROM {self.table} WHERE stream_id = ?",
            (stream_id,),
        ).fetchone()
        return int(row[0])

    def _insert(
        self, tx: Transaction, records: Sequence[EventRecord], guard: int | None, alone: bool
    ) -> list[int] | None:
        if len(records) == 1:
            return self._insert_one(tx, records[0], guard)
        # The version check is a SELECT of its own: this connection holds the database's
        # write lock, so nothing can change between it and the INSERTs.
        if guard is not None and self._current_version(tx, records[0].stream_id) != guard:
            return None
        execute = tx.connection.execute
        recorded_at = recorded_now()
        metadata, metadata_text = b"{}", "{}"  # the events of a unit of work share theirs
        last = 0
        try:
            # Multi-row INSERTs of up to ROWS rows: one statement step per chunk rather
            # than per event; the statements are prepared once per size (sqlite3's cache).
            for start in range(0, len(records), ROWS):
                chunk = records[start : start + ROWS]
                params: list[Any] = [recorded_at]  # ?1, shared by every row of the chunk
                for r in chunk:
                    if r.metadata is not metadata:
                        metadata, metadata_text = r.metadata, r.metadata.decode()
                    params += _row(r, metadata_text)
                last = execute(self._insert_sql(len(chunk)), params).lastrowid or 0
        except sqlite3.Error as exc:
            raise storage_error(exc, f"appending to {self.table}") from exc
        # One writer holds the lock, so the batch's positions are consecutive.
        return list(range(last - len(records) + 1, last + 1))

    def _insert_one(self, tx: Transaction, r: EventRecord, guard: int | None) -> list[int] | None:
        """The common unit of work, one event: with its version check, one statement (on
        a busy machine one statement beats a SELECT and an INSERT: measured, fewer trips
        through the driver), and its position from lastrowid. recorded_at is the column's
        default here: one strftime in SQLite costs less than one in Python."""
        # Without a guard (any version) the stream's version was read under this write
        # lock just before: checking it again costs the subquery, and one statement.
        expected = r.version - 1 if guard is None else guard
        try:
            cursor = tx.connection.execute(
                self._guarded_sql,
                (*_row(r, r.metadata.decode()), expected),
            )
        except sqlite3.IntegrityError as exc:
            # The version was refused (the stream was not at the expected version) or
            # taken: a concurrent writer, unless the stream is where it was expected.
            if self._current_version(tx, r.stream_id) != expected:
                return None
            raise storage_error(exc, f"appending to {self.table}") from exc
        except sqlite3.Error as exc:
            raise storage_error(exc, f"appending to {self.table}") from exc
        return [cursor.lastrowid or 0]

    def _insert_sql(self, rows: int) -> str:
        """The INSERT of ``rows`` rows, with numbered parameters: ?1 is recorded_at, given
        once for all of them (the column's default would run strftime once per row)."""
        sql = self._inserts.get(rows)
        if sql is None:
            values = ", ".join(
                "("
                + ", ".join(f"?{2 + row * COLUMNS + column}" for column in range(COLUMNS))
                + ", ?1)"
                for row in range(rows)
            )
            sql = self._inserts[rows] = f"{self._insert_head}, recorded_at) VALUES {values}"
        return sql

    def _records(self, rows: list[Any]) -> list[EventRecord]:
        """One comprehension for the page: this runs for every event read. A corrupt
        time falls back to the row-by-row path, which names the row."""
        parse, new = datetime.fromisoformat, new_record
        try:
            return [
                new(r[1], r[2], r[3], r[4], r[5], parse(r[6]), r[7].encode(), r[8].encode(), r[0])
                for r in rows
            ]
        except (TypeError, ValueError, AttributeError):
            return super()._records(rows)

    def _time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def _moment(self, value: datetime) -> str:
        return iso_utc(value)  # fixed width, so text order is time order


def recorded_now() -> str:
    """Now, as the recorded_at column's default writes it: UTC, milliseconds, ``Z``."""
    return f"{iso_utc(datetime.now(UTC))[:23]}Z"


def _row(r: EventRecord, metadata_text: str) -> tuple[Any, ...]:
    """A record's values in the order of the INSERT's columns (``_insert_head``), for the
    one-event and the multi-row statement alike."""
    return (
        r.event_id,
        r.stream_id,
        r.version,
        r.event_type,
        r.schema_version,
        iso_utc(r.occurred_at),
        r.data.decode(),
        metadata_text,
    )

"""SqliteOutbox: the outbox in the SQLite file; wakes relays in this process at once and
relays in other processes within milliseconds (``PRAGMA data_version``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from tidings.adapters.sql import iso_utc
from tidings.adapters.sql_outbox import WRITTEN, SqlOutbox
from tidings.adapters.sqlite.database import SqliteDatabase, storage_error
from tidings.ports import Leases, Transaction
from tidings.records import EventRecord, new_record

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
POLL = 0.005  # seconds between data_version checks while waiting


class SqliteOutbox(SqlOutbox):
    """The outbox tables of one SQLite database."""

    now_text = NOW

    def __init__(self, database: SqliteDatabase, leases: Leases) -> None:
        super().__init__(database.tables, leases)
        self._db = database
        self._signal = threading.Event()
        self._seen = threading.local()  # the data_version when this thread's last wait ended
        self._insert_sql = (
            f"INSERT INTO {self.t['outbox']} ({WRITTEN}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def _transaction(self) -> AbstractContextManager[Transaction]:
        return self._db.transaction()

    @contextmanager
    def _bookkeeping(self) -> Iterator[Transaction]:
        """Commit without the fsync (``synchronous = NORMAL`` on this thread's connection
        for this transaction alone; in WAL mode the next FULL commit of any writer flushes
        it too). A power cut can lose the last such commits: published rows go back to
        unpublished and are published again, which the message id and the inbox absorb."""
        conn = self._db.connection()
        lighter = self._db.synchronous in ("FULL", "EXTRA")
        if lighter:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._db.transaction() as tx:
                yield tx
        finally:
            if lighter:
                conn.execute(f"PRAGMA synchronous = {self._db.synchronous}")

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._db.query(sql, params)

    def _insert(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        rows = []
        for record in records:
            values = self.row_values(record)
            rows.append((*values[:5], iso_utc(values[5]), *values[6:]))
        try:
            tx.connection.executemany(self._insert_sql, rows)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"writing to {self.t['outbox']}") from exc
        tx.on_commit(self._signal.set)

    def _execute_many(self, tx: Transaction, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            tx.connection.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"settling a batch of {self.t['outbox']}") from exc

    def _record(self, row: Sequence[Any]) -> EventRecord:
        # new_record, not EventRecord(...): the claim builds one for every row it reads.
        return new_record(
            row[1],
            row[3],
            row[4],
            row[2],
            row[5],
            datetime.fromisoformat(row[6]),
            row[7].encode(),
            row[8].encode(),
            row[0],
        )

    def _age_sql(self, column: str) -> str:
        return f"(julianday('now') - julianday({column})) * 86400.0"

    def _older_than_sql(self, column: str) -> str:
        return f"{column} < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ? || ' seconds')"

    def wait_for_work(self, timeout: float) -> None:
        """Wake on a commit in this process at once, in another within a few milliseconds.

        A commit since this thread's last wait returned counts too: the database version
        is remembered from then (per thread, as each has its own connection), so a row
        another process wrote while the relay was publishing wakes it at once.
        """
        deadline = time.monotonic() + timeout
        seen = getattr(self._seen, "version", None)
        if seen is None:
            seen = self._data_version()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._signal.wait(min(POLL, left)):
                break
            if self._data_version() != seen:
                break
        self._signal.clear()
        self._seen.version = self._data_version()

    def _data_version(self) -> int:
        return int(self._db.query("PRAGMA data_version")[0][0])

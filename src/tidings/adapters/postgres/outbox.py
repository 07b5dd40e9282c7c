"""PostgresOutbox: the outbox in PostgreSQL; relays wake on LISTEN/NOTIFY."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from tidings.adapters.postgres.database import PostgresDatabase, storage_error
from tidings.adapters.sql import commit_channel, ddl_names, schema_file, split_statements
from tidings.adapters.sql_outbox import ROW, WRITTEN, SqlOutbox
from tidings.ports import Leases, Transaction
from tidings.records import EventRecord, new_record


class PostgresOutbox(SqlOutbox):
    """The outbox tables of one PostgreSQL schema.

    Every transaction that writes outbox rows also sends ``NOTIFY`` on the outbox's
    channel (delivered at commit, never for a rollback); a waiting relay wakes at once.
    Polling is only the fallback for a lost listener connection.
    """

    mark = "%s"
    modulo = "%%"
    now_text = "now()"
    select_row = ROW.replace(
        "occurred_at, payload, headers", "occurred_at, payload::text, headers::text"
    )

    def __init__(self, database: PostgresDatabase, leases: Leases) -> None:
        super().__init__(database.tables, leases)
        self._db = database
        self.channel = commit_channel(database.prefix, database.schema)
        # One listening connection per waiting thread, and one claiming connection per
        # claiming thread (both outside the pool, closed by close()).
        self._local = threading.local()
        self._own: list[psycopg.Connection[Any]] = []
        self._own_lock = threading.Lock()
        self._insert_sql = (
            f"INSERT INTO {self.t['outbox']} ({WRITTEN}) "
            "SELECT e, t, a, v, sv, o, p::jsonb, h::jsonb, s FROM unnest(%s::text[], %s::text[], "
            "%s::text[], %s::int[], %s::int[], %s::timestamptz[], %s::text[], %s::text[], "
            "%s::bigint[]) AS u(e, t, a, v, sv, o, p, h, s)"
        )

    def _transaction(self) -> AbstractContextManager[Transaction]:
        return self._db.transaction()

    @contextmanager
    def _bookkeeping(self) -> Iterator[Transaction]:
        """Commit without waiting for the WAL flush (``synchronous_commit = off`` for this
        transaction alone). A server crash can lose the last few hundred milliseconds of
        such commits: rows that were published go back to unpublished and are published
        again (the JetStream message id and the inbox drop the copy). Never used for the
        unit of work's own writes, which must be durable before they count."""
        with self._db.transaction() as tx:
            tx.execute("SET LOCAL synchronous_commit TO OFF")
            yield tx

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._db.query(sql, params)

    def _claim_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The claim's read, on a connection of the claiming thread's own, where the
        planner is told to walk an index (sequential and bitmap scans off).

        The claim's right plan is always a walk of a position index that stops at the
        batch's end. Where the planner expects thousands of due rows (a new outbox, whose
        statistics do not exist yet, or a backlog just written) it chose a bitmap or a
        sequential scan and a sort instead. Both read every row of the estimate, and a
        bitmap scan also reads the index entry of every row published since the last
        VACUUM each time: only a plain index scan marks those entries dead, the first
        time it passes them. At a steady flow on a new outbox the claim's server time
        grew from 0.1 to 0.8 ms within seconds that way (5,000 dead entries read per
        claim); as an index walk it stays at 0.1-0.2 ms. The connection of its own also
        keeps the statement prepared on one connection and spares a pool checkout."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "claimer", None)
        try:
            if conn is None or conn.closed:
                conn = self._connect_own()
                conn.execute("SET enable_bitmapscan = off")
                conn.execute("SET enable_seqscan = off")
                self._local.claimer = conn
            return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()  # a new one on the next claim
            raise storage_error(exc, "claiming", self._db.describe()) from exc

    def _connect_own(self) -> psycopg.Connection[Any]:
        conn = self._db.connect()
        with self._own_lock:  # the closed ones (a reconnect after an outage) go
            self._own = [*(c for c in self._own if not c.closed), conn]
        return conn

    def _insert(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        columns: list[list[Any]] = [[] for _ in range(9)]
        for record in records:
            for column, value in zip(columns, self.row_values(record), strict=True):
                column.append(value)
        tx.execute(self._insert_sql, columns)
        tx.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def _record(self, row: Sequence[Any]) -> EventRecord:
        # new_record, not EventRecord(...): the claim builds one for every row it reads.
        return new_record(
            row[1], row[3], row[4], row[2], row[5], row[6], row[7].encode(), row[8].encode(), row[0]
        )

    def int_set(self, values: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """``= ANY(array)``, the array sent as its text: one parameter, so the statement is
        the same (and prepared) whatever the batch size, and the server parses the list in
        C where psycopg would dump it element by element."""
        return "= ANY(%s::bigint[])", ("{" + ",".join(map(str, map(int, values))) + "}",)

    def int_set_to_leave_out(self, values: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """``NOT IN (SELECT unnest(array))``: PostgreSQL checks each row against a hash
        of the list, built once (a hashed subplan). ``NOT (position = ANY(array))``, as
        a prepared statement, compares each row with every element: a claim of 2,000
        rows leaving out 2,500 took 50-77 ms that way, against 20 ms with none left out;
        this way the list costs next to nothing."""
        array = "{" + ",".join(map(str, map(int, values))) + "}"
        return "NOT IN (SELECT unnest(%s::bigint[]))", (array,)

    def _execute_many(self, tx: Transaction, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """All rows in one pipelined round trip (psycopg's ``executemany``)."""
        if rows:
            try:
                tx.connection.cursor().executemany(sql, rows)
            except psycopg.Error as exc:
                raise storage_error(exc, "settling a batch", self._db.describe()) from exc

    def _age_sql(self, column: str) -> str:
        return f"extract(epoch FROM now() - {column})"

    def _older_than_sql(self, column: str) -> str:
        return f"{column} < now() - make_interval(secs => %s)"

    def wait_for_work(self, timeout: float) -> None:
        """Block until a NOTIFY arrives on the outbox channel, or ``timeout`` passes."""
        listener: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        try:
            if listener is None or listener.closed:
                listener = self._connect_own()
                self._local.conn = listener
                listener.execute(f"LISTEN {self.channel}")
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            if listener is not None:
                listener.close()  # reconnect on the next wait; poll meanwhile
            time.sleep(min(timeout, 1.0))

    def close(self) -> None:
        """Close every listening and claiming connection."""
        with self._own_lock:
            own, self._own = self._own, []
        for conn in own:
            conn.close()


def install_commit_trigger(database: PostgresDatabase) -> None:
    """Make every insert of events NOTIFY the commit channel at commit (a trigger on the
    events table; see ``commit_trigger.sql``), once per schema: a projection runner
    LISTENs there, also where no outbox NOTIFYs it."""
    names = ddl_names(database.prefix, database.schema)
    trigger = f"{database.prefix}events_committed"
    found = (
        "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s AND NOT tgisinternal"
    )
    text = schema_file("tidings.adapters.postgres", "commit_trigger.sql", names)
    with database.transaction() as tx:
        if tx.execute(found, (names["events"], trigger)).fetchone():
            return
        # Two runners starting at once: the second waits here, then finds it made.
        tx.execute(f"LOCK TABLE {names['events']} IN SHARE ROW EXCLUSIVE MODE")
        if tx.execute(found, (names["events"], trigger)).fetchone():
            return
        for statement in split_statements(text):
            tx.execute(statement)

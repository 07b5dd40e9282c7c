"""PostgresDatabase: psycopg 3 with a connection pool, errors mapped at the boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from tidings.adapters.postgres.answering import AnsweringConnection, Patience
from tidings.adapters.postgres.pipeline import pipelined
from tidings.adapters.sql import (
    ddl_names,
    ensure_parts,
    identifier,
    postgres_schema,
    table_names,
    table_prefix,
)
from tidings.errors import (
    ConfigurationError,
    DataRefusedError,
    ServerUnavailableError,
    StorageError,
)
from tidings.ports import Params

try:
    import psycopg
    from psycopg import conninfo
    from psycopg.pq import TransactionStatus
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as missing:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "PostgreSQL support needs the postgres extra: pip install 'tidings[postgres]'"
    ) from missing

IDLE = TransactionStatus.IDLE
START_HINT = (
    "is the server running? On a Debian machine: "
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


# SQLSTATE classes that say the server cannot serve now (a lost or refused connection, a
# shutdown, exhausted resources): an outage, to wait out. Classes 22 (data exception) and
# 54 (program limit exceeded, as an index row too large) blame the data written instead,
# although psycopg raises some of them as OperationalError too.
OUTAGE_CLASSES = ("08", "53", "57")
DATA_CLASSES = ("22", "54")


def storage_error(exc: Exception, doing: str, where: str) -> StorageError:
    """Translate a psycopg or pool error into ours."""
    state = getattr(exc, "sqlstate", None) or ""
    if state[:2] in DATA_CLASSES:
        return DataRefusedError(
            f"{where} refused the data while {doing}: {exc} (SQLSTATE {state}: a value or a "
            "size in the data itself; writing it again fails again)"
        )
    if isinstance(exc, PoolTimeout) or (
        isinstance(exc, psycopg.OperationalError) and (not state or state[:2] in OUTAGE_CLASSES)
    ):
        return ServerUnavailableError(f"cannot reach {where} while {doing}: {exc} ({START_HINT})")
    if isinstance(exc, psycopg.errors.IntegrityError):
        return StorageError(
            f"{where} refused the write while {doing}: {exc} (a constraint was violated; the "
            "whole transaction was rolled back)"
        )
    return StorageError(f"{where} failed while {doing}: {exc}")


class PostgresTransaction:
    """An open transaction on one pooled connection."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._conn = conn
        self._where = where
        self._after: list[Callable[[], None]] = []

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The ``psycopg.Connection`` the transaction runs on."""
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[Any]:
        """Run one statement; psycopg errors arrive as ``StorageError``."""
        try:
            return self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise storage_error(exc, "running your statement", self._where) from exc

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the commit."""
        self._after.append(callback)

    def pipeline(self) -> AbstractContextManager[None]:
        """psycopg's pipeline mode for the block (see ``tidings.adapters.postgres.pipeline``)."""
        return pipelined(self._conn)

    def last_statement(self) -> bool:
        """If nothing has run yet, the transaction has not begun on the server: the next
        statement then runs in autocommit, a transaction of its own, in one round trip."""
        if self._conn.info.transaction_status != IDLE:
            return False
        self._conn.autocommit = True
        return True

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested psycopg transaction (a SAVEPOINT); its commit callbacks go if it fails."""
        if self._conn.info.transaction_status == IDLE:
            # Nothing has run yet, so the transaction has not begun: psycopg would take
            # the block for the whole transaction and commit it at the block's end.
            self.execute("SELECT 1")
        after_mark = len(self._after)
        try:
            with self._conn.transaction():
                yield
        except BaseException:
            del self._after[after_mark:]
            raise


class PostgresDatabase:
    """A PostgreSQL database reached through a ``psycopg_pool.ConnectionPool``.

    Pooled connections are in autocommit mode, so plain reads run as single statements
    (each one a consistent snapshot). A write turns autocommit off for its transaction:
    psycopg then begins it with the first statement, and commits it, on its lean command
    path: with eight writer threads of raw psycopg, 409 against 456 µs of the machine's
    processor time per one-event transaction for ``conn.transaction()``, whose block
    bookkeeping runs in Python under the interpreter lock the writers share. A transaction
    whose only statement is its last one (``PostgresTransaction.last_statement``) is sent
    in autocommit: one round trip.

    Each round trip waits at most ``response_timeout`` seconds (None: for ever) for the
    server's answer, then fails with ``ServerUnavailableError`` (see ``answering``): a
    paused or cut-off server is an outage, never a hang. Set it above the longest
    statement your handlers run.
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        prefix: str = "tidings_",
        pool_min: int = 1,
        pool_max: int = 8,
        connect_timeout: float = 5.0,
        response_timeout: float | None = 60.0,
    ) -> None:
        self.url = url  # for connections outside the pool (a LISTEN); never printed
        self.schema = identifier(schema, "PostgreSQL schema")
        self.prefix = table_prefix(prefix)
        self.tables = table_names(self.prefix, self.schema)
        try:
            params = conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"not a PostgreSQL URL: {exc}") from exc
        params.pop("password", None)
        self._where = (
            "PostgreSQL {user}@{host}:{port}/{dbname}".format_map(
                {"user": "", "host": "localhost", "port": 5432, "dbname": "", **params}
            )
            + f", schema {schema}"
        )
        self.connect_timeout = connect_timeout
        self._patience = Patience(response_timeout)
        self._pool = ConnectionPool(
            url,
            connection_class=AnsweringConnection,
            configure=self._configure,
            min_size=pool_min,
            max_size=pool_max,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            timeout=connect_timeout,
            open=False,
            name=f"tidings-{self.schema}-{self.prefix}",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise ServerUnavailableError(
                f"cannot connect to {self._where} within {connect_timeout} s ({START_HINT})"
            ) from exc

    @property
    def response_timeout(self) -> float | None:
        """Seconds a round trip may wait for the server (None: for ever)."""
        return self._patience.seconds

    @response_timeout.setter
    def response_timeout(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ConfigurationError(
                f"response_timeout must be a positive number of seconds or None, not {seconds}"
            )
        self._patience.seconds = seconds

    def _configure(self, conn: AnsweringConnection) -> None:
        conn.patience = self._patience

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool (autocommit; a LISTEN, say), with the
        pool's connect and response timeouts."""
        conn = AnsweringConnection.connect(
            self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
        )
        conn.patience = self._patience
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a pooled connection (autocommit) for reads or a listener."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise storage_error(exc, "reading", self._where) from exc

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        """A write transaction on one pooled connection; driver errors become ours."""
        try:
            with self._pool.connection() as conn:
                conn.autocommit = False
                try:
                    tx = PostgresTransaction(conn, self._where)
                    yield tx
                    conn.commit()
                finally:
                    _back_to_autocommit(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise storage_error(exc, "writing", self._where) from exc
        for callback in tx._after:
            callback()

    def query(self, sql: str, params: Params = ()) -> list[Any]:
        """Run one read statement and return its rows."""
        with self.connection() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise storage_error(exc, "reading", self._where) from exc

    def create_schema(self) -> None:
        """Create the schema and missing tables, record their versions (idempotent, safe to
        race: two processes starting at once take turns on an advisory lock)."""
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tidings:{self.tables}",))
            exists = tx.execute("SELECT to_regclass(%s)", (self.tables["schema_version"],))
            created = exists.fetchall()[0][0] is not None

            def version_of(part: str) -> int | None:
                if not created:
                    return None
                rows = tx.execute(
                    f"SELECT version FROM {self.tables['schema_version']} WHERE component = %s",
                    (part,),
                ).fetchall()
                return int(rows[0][0]) if rows else None

            ensure_parts(
                tx.execute,
                version_of,
                package=__package__ or "tidings.adapters.postgres",
                names=ddl_names(self.prefix, self.schema),
                mark="%s",
                where=self.describe(),
            )

    def schema_sql(self) -> str:
        """The DDL this database runs, for teams that apply their own migrations."""
        return postgres_schema(self.schema, self.prefix)

    def describe(self) -> str:
        """User, host, port, database and schema (never the password): several services'
        stores often share one database, each in a schema of its own."""
        return self._where

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


def _back_to_autocommit(conn: psycopg.Connection[Any]) -> None:
    """Roll back what a failed block left open and turn autocommit on again, here in the
    caller's thread (a pool ``reset`` would hand every return to the pool's worker thread,
    a thread switch per transaction). A connection that cannot get there is closed: the
    pool replaces a closed connection."""
    if conn.info.transaction_status != IDLE:
        with suppress(psycopg.Error):  # a broken connection: the error on its way says so
            conn.rollback()
    if conn.info.transaction_status == IDLE:
        conn.autocommit = True
    else:
        conn.close()

"""PostgresKeyStore: subjects' keys in a PostgreSQL table."""

from __future__ import annotations

from tidings.adapters.postgres.database import PostgresDatabase
from tidings.adapters.sql_key_store import SqlKeyStore


class PostgresKeyStore(SqlKeyStore):
    """Forgetting deletes the row. PostgreSQL keeps a deleted row's bytes in the table's
    pages until VACUUM reclaims them (and in WAL files and backups until those expire):
    run ``VACUUM FULL`` on the key table after forgetting, as docs/event-sourcing.md says.
    """

    mark = "%s"

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(database.tables["subject_keys"], database.query)
        self._db = database

    def forget(self, subject: str) -> bool:
        """Delete the subject's key in a transaction of its own."""
        with self._db.transaction() as tx:
            return bool(tx.execute(self._delete_sql, (subject,)).rowcount)

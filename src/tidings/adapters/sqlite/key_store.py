"""SqliteKeyStore: subjects' keys in the SQLite file, deleted so no copy stays in it."""

from __future__ import annotations

import logging
import time

from tidings.adapters.sql_key_store import SqlKeyStore
from tidings.adapters.sqlite.database import SqliteDatabase

log = logging.getLogger(__name__)
CHECKPOINT_TRIES = 50  # a reader holding an old snapshot blocks the WAL reset; wait a bit


class SqliteKeyStore(SqlKeyStore):
    """Forgetting overwrites the key where it was: ``secure_delete`` zeroes the deleted
    row in its page, and a ``wal_checkpoint(TRUNCATE)`` copies that page into the file
    and empties the WAL, where the older versions of the page (with the key) still were.
    """

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database.tables["subject_keys"], database.query)
        self._db = database

    def forget(self, subject: str) -> bool:
        """Delete the key with secure_delete on, then checkpoint and truncate the WAL."""
        conn = self._db.connection()
        before = conn.execute("PRAGMA secure_delete").fetchone()[0]
        conn.execute("PRAGMA secure_delete = ON")
        try:
            with self._db.transaction() as tx:
                deleted = tx.execute(self._delete_sql, (subject,)).rowcount > 0
        finally:
            conn.execute(f"PRAGMA secure_delete = {int(before)}")
        for _ in range(CHECKPOINT_TRIES):
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                break
            time.sleep(0.02)
        else:
            log.warning(
                "the key of %r is deleted, but readers kept the WAL of %s busy: its old "
                "bytes leave the WAL at the next checkpoint",
                subject,
                self._db.path,
            )
        return deleted

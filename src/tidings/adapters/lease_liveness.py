"""Liveness locks: how a lease holder's death is seen at once, not after its lease.

Every owner of a lease set holds a lock of its own for as long as it leases: a
PostgreSQL session-level advisory lock on a connection kept for it (the server lets go
of the lock the moment that connection drops, which it does when the process dies), or
an OS file lock (``flock``) on a file beside the SQLite database (the kernel lets go
of it when the process dies). An owner whose lock nobody holds is dead: the others take
its slots over at their next lease, under new fencing tokens, without waiting for its
lease to run out. A process that hangs without dying keeps its lock, and loses its slots
through the lease as before; the lease table stays the record of owners and tokens.

A lock says "maybe alive" when in doubt, never "dead": a hash that two owners share, or
a file that cannot be read, only makes a takeover wait for the lease.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from tidings.ports import Transaction


class Liveness(Protocol):
    """The locks of a lease component's owners."""

    def hold(self, owner: str, name: str) -> None:
        """Make sure ``owner`` holds its lock for the set ``name`` (before it leases)."""

    def alive(self, tx: Transaction, name: str, owners: Iterable[str]) -> set[str]:
        """Those of ``owners`` whose lock for ``name`` someone holds now."""

    def drop(self, owner: str, name: str) -> None:
        """Let go of ``owner``'s lock for ``name`` (it released its slots)."""

    def close(self) -> None:
        """Let go of every lock held here."""


class NoLiveness:
    """No locks: every owner is taken for alive until its lease runs out."""

    def hold(self, owner: str, name: str) -> None:
        """Nothing to hold."""

    def alive(self, tx: Transaction, name: str, owners: Iterable[str]) -> set[str]:
        """Everyone."""
        return set(owners)

    def drop(self, owner: str, name: str) -> None:
        """Nothing to let go of."""

    def close(self) -> None:
        """Nothing to close."""


def _int4(value: int) -> int:
    """An unsigned 32-bit hash as PostgreSQL's signed ``integer``."""
    return value - (1 << 32) if value >= 1 << 31 else value


class SessionLocks:
    """Session-level advisory locks on one connection of this process, kept open for
    them: key (CRC-32 of the tables and the set, CRC-32 of the owner). Others read
    ``pg_locks`` to see who holds one; nobody else ever takes them."""

    def __init__(self, database: Any, scope: str) -> None:
        self._db = database
        self._scope = scope  # the lease table's name: sets of two schemas never meet
        self._conn: Any = None
        self._held: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def _key(self, owner: str, name: str) -> tuple[int, int]:
        return (
            zlib.crc32(f"{self._scope}:{name}".encode()),
            zlib.crc32(owner.encode()),
        )

    def hold(self, owner: str, name: str) -> None:
        """Take the owner's lock on the kept connection, connecting again if it broke
        (a lock lost with a broken connection is taken again: its slots may have been
        taken over meanwhile, which the fencing tokens show)."""
        import psycopg

        from tidings.adapters.postgres.database import storage_error

        key = self._key(owner, name)
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._reset()
                    self._conn = self._db.connect()
                if key not in self._held:
                    self._conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (_int4(key[0]), _int4(key[1]))
                    )
                    self._held.add(key)
            except psycopg.Error as exc:
                self._reset()
                raise storage_error(exc, "locking", self._db.describe()) from exc

    def _reset(self) -> None:
        conn, self._conn, self._held = self._conn, None, set()
        if conn is not None and not conn.closed:
            conn.close()

    def alive(self, tx: Transaction, name: str, owners: Iterable[str]) -> set[str]:
        """The owners whose lock some session of this database holds (one read of
        ``pg_locks``, in ``tx``)."""
        wanted = {owner: self._key(owner, name) for owner in owners}
        if not wanted:
            return set()
        scope = zlib.crc32(f"{self._scope}:{name}".encode())
        rows = tx.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 2 AND classid::bigint = %s AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (scope,),
        ).fetchall()
        held = {int(row[0]) for row in rows}
        return {owner for owner, key in wanted.items() if key[1] in held}

    def drop(self, owner: str, name: str) -> None:
        """Unlock the owner's key on the kept connection."""
        key = self._key(owner, name)
        with self._lock:
            if key not in self._held or self._conn is None or self._conn.closed:
                return
            self._held.discard(key)
            try:
                self._conn.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (_int4(key[0]), _int4(key[1]))
                )
            except Exception:  # a broken connection has let go of every lock already
                self._reset()

    def close(self) -> None:
        """Close the kept connection: the server lets go of its locks."""
        with self._lock:
            self._reset()


class FileLocks:
    """``flock`` on one file per owner and set in ``directory`` (beside the SQLite file):
    the owner holds it exclusively while it leases; another process, or another open
    file in this one, sees it held."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._files: dict[Path, int] = {}
        self._lock = threading.Lock()

    def _path(self, owner: str, name: str) -> Path:
        digest = hashlib.sha256(f"{name}\0{owner}".encode()).hexdigest()[:32]
        return self._dir / f"{digest}.lock"

    def hold(self, owner: str, name: str) -> None:
        """Open the owner's file and lock it, once."""
        path = self._path(owner, name)
        with self._lock:
            if path in self._files:
                return
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # held by an owner of the same name: leave it to the lease
                return
            self._files[path] = fd

    def alive(self, tx: Transaction, name: str, owners: Iterable[str]) -> set[str]:
        """The owners whose file is locked by someone (the caller's own included)."""
        return {owner for owner in owners if _locked(self._path(owner, name))}

    def drop(self, owner: str, name: str) -> None:
        """Remove the owner's file and unlock it (removed first: nobody finds it free)."""
        path = self._path(owner, name)
        with self._lock:
            fd = self._files.pop(path, None)
            if fd is None:
                return
            try:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Unlock every file held here (the files stay: their owners ended unreleased)."""
        with self._lock:
            files, self._files = self._files, {}
        for fd in files.values():
            os.close(fd)


def _locked(path: Path) -> bool:
    """Whether some open file holds a lock on ``path``; True when it cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # EWOULDBLOCK: held; anything else: cannot tell, so maybe alive
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)

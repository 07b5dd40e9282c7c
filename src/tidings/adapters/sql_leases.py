"""SqlLeases: the ``Leases`` port on the tables ``leases`` and ``lease_owners``, for SQLite
and PostgreSQL alike (the dialect is passed in).

Lease changes of one set take turns: on SQLite the write lock every transaction takes at
its start does it, on PostgreSQL a transaction-scoped advisory lock on a hash of the set's
name. Taking turns keeps the fair share simple (each change sees every heartbeat before it)
and costs nothing that matters: a set changes a few times per lease period. The update
that takes a slot checks again that it is free, so even without the turns two owners could
never both take one. ``holds`` reads the slots under ``FOR SHARE`` on PostgreSQL: a
takeover (an update of the row) waits until the transaction that checked has ended.

A dead owner is seen at once through its liveness lock (``lease_liveness``: a session
advisory lock on PostgreSQL, a file lock beside the SQLite file, which the server or the
kernel frees the moment the owner's process dies): its heartbeat and slots are cleared at
the next lease of any other owner, and taken over under new tokens. The table stays the
record of tokens, and the lease the fallback for an owner that hangs without dying.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tidings.adapters.lease_liveness import FileLocks, Liveness, NoLiveness, SessionLocks
from tidings.adapters.leasing import check_lease, fair_share
from tidings.errors import ConfigurationError, LeaseCountError
from tidings.ports import Transaction


class SqlLeases:
    """Lease sets in the ``leases`` table, owners' heartbeats in ``lease_owners``."""

    def __init__(
        self,
        tables: Mapping[str, str],
        *,
        dialect: str,
        transaction: Callable[[], AbstractContextManager[Transaction]],
        liveness: Liveness | None = None,
    ) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"SqlLeases speaks sqlite and postgresql, not {dialect!r}: pass one of them"
            )
        self._slots, self._owners = tables["leases"], tables["lease_owners"]
        self._postgres = dialect == "postgresql"
        self._m = "%s" if self._postgres else "?"
        self._for_share = " FOR SHARE" if self._postgres else ""
        self._transaction = transaction
        self._liveness: Liveness = liveness if liveness is not None else NoLiveness()

    def lease(self, owner: str, name: str, count: int, ttl: float, now: float) -> dict[int, int]:
        """Renew, give back what is over the fair share, take free or expired slots."""
        check_lease(owner, name, count, ttl)
        m, slots, owners = self._m, self._slots, self._owners
        self._liveness.hold(owner, name)  # before it holds anything, or it looks dead
        with self._transaction() as tx:
            self._take_turn(tx, name)
            self._clear_dead(tx, owner, name)
            self._resize(tx, name, count, now)
            tx.execute(f"DELETE FROM {owners} WHERE name = {m} AND alive_until < {m}", (name, now))
            tx.execute(f"DELETE FROM {owners} WHERE name = {m} AND owner = {m}", (name, owner))
            tx.execute(
                f"INSERT INTO {owners} (name, owner, alive_until) VALUES ({m}, {m}, {m})",
                (name, owner, now + ttl),
            )
            live = tx.execute(f"SELECT owner FROM {owners} WHERE name = {m}", (name,)).fetchall()
            share = fair_share(owner, [row[0] for row in live], count)
            tx.execute(
                f"UPDATE {slots} SET lease_until = {m} WHERE name = {m} AND owner = {m}",
                (now + ttl, name, owner),
            )
            held = self._held(tx, owner, name)
            for slot in sorted(held)[share:]:
                tx.execute(
                    f"UPDATE {slots} SET owner = NULL, lease_until = 0 "
                    f"WHERE name = {m} AND slot = {m} AND owner = {m}",
                    (name, slot, owner),
                )
            if len(held) < share:
                free = tx.execute(
                    f"SELECT slot FROM {slots} WHERE name = {m} "
                    f"AND (owner IS NULL OR lease_until < {m}) ORDER BY slot",
                    (name, now),
                ).fetchall()
                for (slot,) in free[: share - len(held)]:
                    # Checked again on the row itself: of two owners after one slot, only
                    # the first gets it (the turns make this a second line of defence).
                    tx.execute(
                        f"UPDATE {slots} SET owner = {m}, token = token + 1, lease_until = {m} "
                        f"WHERE name = {m} AND slot = {m} AND (owner IS NULL OR lease_until < {m})",
                        (owner, now + ttl, name, slot, now),
                    )
            return self._held(tx, owner, name)

    def _take_turn(self, tx: Transaction, name: str) -> None:
        """Wait in ``tx`` until no other transaction changes the leases of ``name``, and
        keep them out until ``tx`` ends (SQLite: the write lock ``tx`` holds already)."""
        if self._postgres:
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._slots}:{name}",))

    def _clear_dead(self, tx: Transaction, owner: str, name: str) -> None:
        """Forget the owners of ``name`` whose liveness lock nobody holds: their processes
        died. Their heartbeats go and their slots are free (each keeps its token: whoever
        takes it bumps it), so they are taken over now, not once their leases ran out."""
        m = self._m
        known = tx.execute(
            f"SELECT owner FROM {self._owners} WHERE name = {m} AND owner <> {m} UNION "
            f"SELECT owner FROM {self._slots} WHERE name = {m} AND owner IS NOT NULL "
            f"AND owner <> {m}",
            (name, owner, name, owner),
        ).fetchall()
        others = {row[0] for row in known}
        for dead in sorted(others - self._liveness.alive(tx, name, others)):
            tx.execute(
                f"UPDATE {self._slots} SET owner = NULL, lease_until = 0 "
                f"WHERE name = {m} AND owner = {m}",
                (name, dead),
            )
            tx.execute(f"DELETE FROM {self._owners} WHERE name = {m} AND owner = {m}", (name, dead))

    def _resize(self, tx: Transaction, name: str, count: int, now: float) -> None:
        """Make the set ``count`` slots unless live owners hold it at another count; new
        slots start at the highest token the set had, so no slot's token goes back."""
        m = self._m
        stored, busy, top = tx.execute(
            f"SELECT count(*), coalesce(sum(CASE WHEN owner IS NOT NULL AND lease_until >= {m} "
            f"THEN 1 ELSE 0 END), 0), coalesce(max(token), 0) FROM {self._slots} "
            f"WHERE name = {m}",
            (now, name),
        ).fetchall()[0]
        if int(stored) == count:
            return
        if int(busy):
            raise LeaseCountError(name, int(stored), count)
        tx.execute(f"DELETE FROM {self._slots} WHERE name = {m}", (name,))
        for slot in range(count):
            tx.execute(
                f"INSERT INTO {self._slots} (name, slot, token) VALUES ({m}, {m}, {m})",
                (name, slot, int(top)),
            )

    def _held(self, tx: Transaction, owner: str, name: str) -> dict[int, int]:
        rows = tx.execute(
            f"SELECT slot, token FROM {self._slots} WHERE name = {self._m} AND owner = {self._m}",
            (name, owner),
        ).fetchall()
        return {int(slot): int(token) for slot, token in rows}

    def release(self, owner: str, name: str) -> None:
        """Give back every slot ``owner`` holds; it no longer counts as alive."""
        m = self._m
        with self._transaction() as tx:
            self._take_turn(tx, name)
            tx.execute(
                f"UPDATE {self._slots} SET owner = NULL, lease_until = 0 "
                f"WHERE name = {m} AND owner = {m}",
                (name, owner),
            )
            tx.execute(
                f"DELETE FROM {self._owners} WHERE name = {m} AND owner = {m}", (name, owner)
            )
        self._liveness.drop(owner, name)  # after the release: it never looks dead holding

    def close(self) -> None:
        """Let go of the liveness locks of this process's owners."""
        self._liveness.close()

    def holds(self, tx: Transaction, owner: str, name: str, tokens: Mapping[int, int]) -> bool:
        """Whether ``owner`` holds these slots with these tokens, checked in ``tx``; the
        rows stay locked against a takeover until ``tx`` ends."""
        if not tokens:
            return True
        m = self._m
        wanted = sorted(tokens)
        rows = tx.execute(
            f"SELECT slot, token FROM {self._slots} WHERE name = {m} AND owner = {m} "
            f"AND slot IN ({', '.join([m] * len(wanted))}){self._for_share}",
            (name, owner, *wanted),
        ).fetchall()
        found: dict[int, int] = {int(slot): int(token) for slot, token in rows}
        return found == dict(tokens)


def sql_leases(database: Any) -> SqlLeases:
    """The lease component of an SQLite or PostgreSQL database of tidings, with the
    liveness locks of its backend."""
    liveness: Liveness
    if database.dialect == "postgresql":
        liveness = SessionLocks(database, database.tables["leases"])
    else:
        path = Path(database.path)
        liveness = FileLocks(path.with_name(path.name + "-leases"))
    return SqlLeases(
        database.tables,
        dialect=database.dialect,
        transaction=database.transaction,
        liveness=liveness,
    )

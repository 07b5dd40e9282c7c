"""ReaderHold: how long the PostgreSQL log reader has been held at a hole, and by whom.

A hole in positions is passed only once every transaction older than its writer's has
ended, on the whole server (see ``PostgresEventStore``). One forgotten session left
``idle in transaction`` therefore stops every reader of the log, silently. This module
measures that from the database, so it is the same figure for a reader that has run for
days and for a fresh process reading from a checkpoint, and says it in a warning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

XID_WRAP = 2**32
"""pg_stat_activity shows 32-bit transaction ids; the snapshot gives 64-bit ones."""


@dataclass(frozen=True)
class ReaderHold:
    """Where ``read_all`` stopped before a hole that may still fill, and what holds it."""

    position: int
    """The first empty position the reader cannot pass yet."""
    held_seconds: float
    """Since the first event past the hole was recorded: how long a reader that keeps up
    has been held there."""
    oldest_xid: int | None
    """The oldest transaction still running on the server (the reader waits for it)."""
    oldest_pid: int | None
    """Its server process (``pg_stat_activity.pid``); None for a prepared transaction."""
    oldest_seconds: float | None
    """How long that transaction has been open; None when the server does not show it
    to this user (it needs the ``pg_read_all_stats`` role for other users' sessions)."""

    def describe(self) -> str:
        """One sentence for the log: what is held, for how long, and by what."""
        if self.oldest_xid is None:
            by = "a transaction that has ended since"
        else:
            who = "a prepared transaction" if self.oldest_pid is None else f"pid {self.oldest_pid}"
            age = "" if self.oldest_seconds is None else f", open for {self.oldest_seconds:.1f} s"
            by = f"transaction {self.oldest_xid} ({who}{age})"
        return (
            f"the event log reader has been held for {self.held_seconds:.1f} s before position "
            f"{self.position}, a hole that may still fill, behind {by}; a hole is passed only "
            "once every transaction older than its writer has ended, on the whole server: "
            "end long-running or idle-in-transaction sessions (see pg_stat_activity)"
        )


def hold_sql(events_table: str) -> str:
    """One statement measuring a hold: the age of the first event past the hole, and the
    oldest running transaction's process and age (a live session or a prepared one)."""
    oldest = (
        "SELECT pid, xact_start AS since FROM pg_stat_activity WHERE backend_xid = %s::xid "
        "UNION ALL SELECT NULL, prepared FROM pg_prepared_xacts WHERE transaction = %s::xid"
    )
    return (
        f"WITH oldest AS ({oldest} LIMIT 1) SELECT "
        "(SELECT extract(epoch FROM clock_timestamp() - recorded_at)::float8 "
        f"FROM {events_table} WHERE position = %s), "
        "(SELECT pid FROM oldest), "
        "(SELECT extract(epoch FROM clock_timestamp() - since)::float8 FROM oldest)"
    )


def measure_hold(
    query: Callable[[str, tuple[Any, ...]], list[Any]],
    sql: str,
    position: int,
    past_hole: int,
    oldest_xid: int | None,
) -> ReaderHold:
    """The hold at ``position``, whose next event is at ``past_hole``, behind the running
    transaction ``oldest_xid`` (None: none was running at the last read)."""
    short = str(oldest_xid % XID_WRAP) if oldest_xid is not None else "0"  # 0: no such xid
    held, pid, seconds = query(sql, (short, short, past_hole))[0]
    return ReaderHold(
        position=position,
        held_seconds=max(float(held or 0.0), 0.0),
        oldest_xid=oldest_xid,
        oldest_pid=None if pid is None else int(pid),
        oldest_seconds=None if seconds is None else float(seconds),
    )


class HoldWarning:
    """Warns about a hold of at least ``after`` seconds, at most once per ``every`` seconds
    (shared by the threads that read through one store)."""

    def __init__(self, after: float, every: float) -> None:
        self.after = after
        self.every = every
        self._last: float | None = None
        self._lock = threading.Lock()

    def consider(self, hold: ReaderHold) -> None:
        """Log ``hold`` as a warning if it is long enough and none was logged lately."""
        if hold.held_seconds < self.after:
            return
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < self.every:
                return
            self._last = now
        log.warning("%s", hold.describe())

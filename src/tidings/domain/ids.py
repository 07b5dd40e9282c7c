"""Time-ordered event ids and the UTC clock: the two things the domain gets injected."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
IdSource = Callable[[], str]


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UUID7Source:
    """Make UUIDv7 strings (RFC 9562) that sort in the order they were made.

    Within one millisecond a 12-bit counter keeps them increasing (method 1 of the RFC);
    when it runs out the timestamp is borrowed forward by a millisecond, so order holds
    even at millions of ids a second. The random bits come from ``os.urandom`` a few
    kilobytes at a time (one system call per ~400 ids, not one per id); a forked child
    drops what its parent had drawn, so two processes never share random bits.
    ``time_ns`` is the clock (nanoseconds since the epoch), replaceable for tests.
    """

    def __init__(self, time_ns: Callable[[], int] = time.time_ns) -> None:
        self._time_ns = time_ns
        self._lock = threading.Lock()
        self._last_ms = 0
        self._head = ""  # the text up to the counter: milliseconds, dashes, version 7
        self._counter = 0
        self._pool = ""  # random hex digits, used up 19 per id
        self._at = 0
        _SOURCES.add(self)

    def __call__(self) -> str:
        # Runs once per event recorded: the text before the counter changes once a
        # millisecond at most, so it is kept, and each id is a single f-string. The lock
        # is taken by acquire/release, not ``with``: half the cost of the context manager
        # protocol, which is a fifth of the whole call.
        lock = self._lock
        lock.acquire()
        try:
            at, pool = self._at, self._pool
            if at + 19 > len(pool):
                pool, at = os.urandom(POOL_BYTES).hex(), 0
                self._pool = pool
            self._at = at + 19
            now_ms = self._time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._head = _head(now_ms)
                counter = int(pool[at + 16 : at + 19], 16) & 0x7FF
            else:
                counter = self._counter + 1
                if counter > 0xFFF:
                    self._last_ms += 1
                    self._head = _head(self._last_ms)
                    counter = 0
            self._counter = counter
            head = self._head
        finally:
            lock.release()
        # 48 bits of milliseconds, version 7, the 12-bit counter (in hex from a table:
        # cheaper than a format spec), then the variant (binary 10) and 62 random bits.
        return (
            f"{head}{_HEX3[counter]}-{_VARIANT[pool[at]]}{pool[at + 1 : at + 4]}-"
            f"{pool[at + 4 : at + 16]}"
        )

    def _forget_pool(self) -> None:
        self._pool, self._at = "", 0


def _head(ms: int) -> str:
    """The first 15 characters of the ids of millisecond ``ms``: up to the version digit."""
    digits = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    return f"{digits[:8]}-{digits[8:]}-7"


POOL_BYTES = 4096
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_HEX3 = tuple(f"{n:03x}" for n in range(4096))
_SOURCES: weakref.WeakSet[UUID7Source] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for source in list(_SOURCES):
        source._forget_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)


uuid7 = UUID7Source()
"""The default id source, shared so ids from one process stay ordered."""

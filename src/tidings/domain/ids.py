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
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._pool = b""
        self._at = 0
        _SOURCES.add(self)

    def __call__(self) -> str:
        with self._lock:
            if self._at + 10 > len(self._pool):
                self._pool, self._at = os.urandom(POOL_BYTES), 0
            at = self._at
            self._at = at + 10
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(self._pool[at + 8 : at + 10]) & 0x7FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
            tail = int.from_bytes(self._pool[at : at + 8]) & 0x3FFF_FFFF_FFFF_FFFF
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | tail
        h = f"{value:032x}"  # the canonical form, without building a uuid.UUID first
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _forget_pool(self) -> None:
        self._pool, self._at = b"", 0


POOL_BYTES = 4096
_SOURCES: weakref.WeakSet[UUID7Source] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for source in list(_SOURCES):
        source._forget_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)


uuid7 = UUID7Source()
"""The default id source, shared so ids from one process stay ordered."""

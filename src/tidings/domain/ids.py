"""Time-ordered event ids and the UTC clock: the two things the domain gets injected."""

from __future__ import annotations

import os
import threading
import time
import uuid
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
    even at millions of ids a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        tail = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | tail
        return str(uuid.UUID(int=value))


uuid7 = UUID7Source()
"""The default id source, shared so ids from one process stay ordered."""

"""Fakes for what the domain gets injected: a clock you move by hand, ids you can read."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta


class FixedClock:
    """A clock that says ``now`` until you ``advance`` it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2025, 1, 15, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move the clock forward by ``timedelta(**delta)`` and return the new time."""
        self.now += timedelta(**delta)
        return self.now


class SequentialIds:
    """Ids ``evt-000001``, ``evt-000002``, ... (with a prefix of your choice)."""

    def __init__(self, prefix: str = "evt-") -> None:
        self._counter = itertools.count(1)
        self._prefix = prefix

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):06d}"

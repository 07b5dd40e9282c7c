"""Backoff: how long to wait before the next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor**(attempt-1)``, capped, +-jitter."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        raw = min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        return raw * (1 - self.jitter + 2 * self.jitter * rng.random())

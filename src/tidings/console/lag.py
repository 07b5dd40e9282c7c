"""The lag of each projection over the last hour, sampled by the console while it runs.

The store keeps a projection's position, not its history, so the console samples the
status every ``every`` seconds (in its event loop, where it reads everything else) and
keeps an hour of it in memory: the chart starts when the console does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from tidings.application.projections.status import ProjectionStatus

HOUR = 3600.0


@dataclass(frozen=True)
class Sample:
    """One projection's lag at one moment."""

    at: float
    events: int
    seconds: float


class LagHistory:
    """An hour of lag samples per projection."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._samples: dict[str, deque[Sample]] = {}

    def add(self, statuses: list[ProjectionStatus]) -> None:
        """Keep this moment's lag of each projection; forget samples older than an hour."""
        now = self.clock()
        for s in statuses:
            kept = self._samples.setdefault(s.name, deque())
            kept.append(Sample(now, s.lag_events, s.lag_seconds))
            while kept and kept[0].at < now - HOUR:
                kept.popleft()

    def of(self, name: str) -> list[Sample]:
        """The samples of one projection, oldest first."""
        return list(self._samples.get(name, ()))

    async def sample(self, read: Callable[[], list[ProjectionStatus]], every: float) -> None:
        """Sample ``read()`` every ``every`` seconds until cancelled; a failed read (the
        database restarting) is skipped, not fatal."""
        while True:
            with suppress(Exception):  # the database may be restarting: the next tick tries
                self.add(read())
            await asyncio.sleep(every)


def chart(samples: list[Sample], width: int = 720, height: int = 200) -> dict[str, object]:
    """The points of an SVG polyline of lag in events over time, scaled to the box."""
    if not samples:
        return {"points": "", "top": 0, "width": width, "height": height, "span": 0.0}
    start, end = samples[0].at, samples[-1].at
    span = max(end - start, 1.0)
    top = max(1, *(s.events for s in samples))
    points = " ".join(
        f"{(s.at - start) / span * width:.1f},{height - s.events / top * height:.1f}"
        for s in samples
    )
    return {"points": points, "top": top, "width": width, "height": height, "span": end - start}

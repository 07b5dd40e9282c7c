"""Histogram buckets counted in plain Python, so the workers' hot paths need no metrics
library: the Prometheus collectors read them at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

LATENCY_BOUNDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds in seconds, from a handler's millisecond to a relay a minute behind."""


class Buckets:
    """Observations counted per upper bound (each in the first bucket that holds it),
    with their count and sum.

    One thread writes (the worker), another reads (a scrape): a scrape may see a count
    that is one batch ahead of the sum, never a torn number, which is all Prometheus
    asks of a histogram read between two increments.
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: Iterable[float]) -> None:
        """Count many observations (a batch's, at once)."""
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.total += total

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, observations at or below it), as Prometheus exposes them."""
        running = 0
        out = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out

"""Repeated measurements, their medians, and the Markdown tables the benchmarks print."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), for the record beside the figures."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@dataclass
class Series:
    """One configuration measured several times; the median is what the tables show."""

    name: str
    values: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Keep one run's figure and the 1-minute load at its end."""
        self.values.append(value)
        self.loads.append(os.getloadavg()[0])

    @property
    def median(self) -> float:
        """The median run (nan before the first)."""
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self) -> str:
        """Every run's figure, so a reader sees how noisy the machine was."""
        return " / ".join(f"{v:,.0f}" for v in self.values)


def rate(count: int, work: Callable[[], object]) -> float:
    """Items per second of ``work()`` handling ``count`` items."""
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def on_terminal() -> bool:
    """True when the output is a terminal: only there may a table be framed (rich); in a
    log or a pipe the benchmarks print plain Markdown."""
    return sys.stdout.isatty()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, first column left-aligned and the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            f"{c:<{widths[0]}}" if i == 0 else f"{c:>{widths[i]}}" for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def per_second(value: float) -> str:
    """A rate as the tables print it."""
    return f"{value:,.0f}"


def verdict(met: bool) -> str:
    """A target's outcome, in words."""
    return "met" if met else "NOT met"

"""A projection's status: position, head, lag in events and seconds, state, heartbeat."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tidings.domain.projection_state import REBUILDING, RUNNING, Checkpoint, LogHead

log = logging.getLogger(__name__)

STALE_AFTER = 10.0
"""Seconds without a heartbeat after which a running projection's runner counts as stuck
or gone (runners beat every second or so, also when idle)."""


@dataclass(frozen=True)
class ProjectionStatus:
    """The figures of one projection at one moment, readable from Python.

    ``lag_events`` counts the committed events after ``position``; ``lag_seconds`` is the
    commit time of the head minus that of the last event the projection holds (0.0 when
    it holds the head). ``heartbeat_age`` is how long ago a runner last said it was alive
    (None: never), by the clock the status was taken with. A rebuild under way (its row
    ``NAME~rebuild``, state ``rebuilding``) has a ``rate``: events per second since its
    run began (or resumed) to its last batch, and ``eta_seconds``: the events left to the
    head at that rate (both None before its first batch, and for other rows).
    """

    name: str
    version: int
    state: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    lag_threshold: float
    heartbeat_age: float | None
    runner: str
    error: str = ""
    failed_position: int = 0
    failed_event_id: str = ""
    failed_event_type: str = ""
    rate: float | None = None
    eta_seconds: float | None = None

    @property
    def lagging(self) -> bool:
        """Lag in seconds above the projection's threshold."""
        return self.lag_seconds > self.lag_threshold

    @property
    def stale(self) -> bool:
        """Marked running, but no heartbeat for ``STALE_AFTER`` seconds: the runner is
        stuck (a handler that never returns) or gone (killed), not idle."""
        return self.state == RUNNING and (
            self.heartbeat_age is None or self.heartbeat_age > STALE_AFTER
        )

    def describe(self) -> str:
        """One line for a terminal or a log."""
        beat = "never" if self.heartbeat_age is None else f"{self.heartbeat_age:.1f} s ago"
        line = (
            f"{self.name} v{self.version}  {self.state}  position {self.position} of "
            f"{self.head}  lag {self.lag_events} events, {self.lag_seconds:.1f} s  "
            f"heartbeat {beat}"
        )
        if self.rate is not None and self.eta_seconds is not None:
            line += f"  {self.rate:,.0f} events/s, ETA {self.eta_seconds:,.0f} s"
        if self.stale:
            line += "  (no heartbeat: the runner is stuck or gone)"
        if self.name.endswith("~old"):  # the version a rebuild swapped out
            live = self.name.removesuffix("~old")
            line += f"  (kept for: tidings projections rollback {live}, or drop-old {live})"
        if self.lagging:
            line += f"  (over the {self.lag_threshold:g} s threshold)"
        if self.error and not self.failed_event_id:  # paused by hand, not on an event
            line += f"\n    {self.error}"
        elif self.error:
            line += (
                f"\n    paused on position {self.failed_position} "
                f"(event {self.failed_event_id}, {self.failed_event_type}): "
                + self.error.replace("\n", "\n    ")
            )
        return line


def status_of(checkpoint: Checkpoint, head: LogHead, now: float) -> ProjectionStatus:
    """The figures of ``checkpoint`` against the log's ``head``, at time ``now``."""
    behind = head.behind
    seconds = max(head.head_time - head.position_time, 0.0) if behind else 0.0
    return ProjectionStatus(
        name=checkpoint.name,
        version=checkpoint.version,
        state=checkpoint.state,
        position=checkpoint.position,
        head=head.head,
        lag_events=behind,
        lag_seconds=seconds,
        lag_threshold=checkpoint.lag_threshold,
        heartbeat_age=max(now - checkpoint.heartbeat, 0.0) if checkpoint.heartbeat else None,
        runner=checkpoint.runner,
        error=checkpoint.error,
        failed_position=checkpoint.failed_position,
        failed_event_id=checkpoint.failed_event_id,
        failed_event_type=checkpoint.failed_event_type,
        **_pace(checkpoint, head.head),
    )


def _pace(checkpoint: Checkpoint, head: int) -> dict[str, float]:
    """A rebuild's rate (events/s since its run began, to its last batch) and its ETA."""
    if checkpoint.state != REBUILDING or not checkpoint.started_at:
        return {}
    took = checkpoint.heartbeat - checkpoint.started_at
    done = checkpoint.position - checkpoint.started_position
    if took <= 0 or done <= 0:
        return {}
    rate = done / took
    return {"rate": rate, "eta_seconds": max(head - checkpoint.position, 0) / rate}


class LagAlarm:
    """Calls ``hook`` and warns when a projection's lag crosses its threshold, once per
    crossing; says so at info level when it is back under."""

    def __init__(self, hook: Callable[[ProjectionStatus], None] | None = None) -> None:
        self._hook = hook
        self._over: set[str] = set()

    def consider(self, status: ProjectionStatus) -> bool:
        """Look at one status; True when it has just crossed over the threshold."""
        if not status.lagging:
            if status.name in self._over:
                self._over.discard(status.name)
                log.info("projection %s is back under its lag threshold", status.name)
            return False
        if status.name in self._over:
            return False
        self._over.add(status.name)
        log.warning(
            "projection %s lags %.1f s (%d events) behind the log, over its %g s threshold; "
            "see tidings projections status",
            status.name,
            status.lag_seconds,
            status.lag_events,
            status.lag_threshold,
        )
        if self._hook is not None:
            try:
                self._hook(status)
            except Exception:  # an alert that fails must not stop the projections
                log.exception("the lag alert hook failed for projection %s", status.name)
        return True

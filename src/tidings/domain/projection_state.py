"""What a projection's checkpoint holds, and the figures its status reports."""

from __future__ import annotations

from dataclasses import dataclass

RUNNING = "running"
STOPPED = "stopped"
PAUSED = "paused"
REBUILDING = "rebuilding"  # a rebuild's own row, NAME~rebuild: the shadow's position
STATES = (RUNNING, STOPPED, PAUSED, REBUILDING)


@dataclass(frozen=True)
class Checkpoint:
    """One projection's place in the global log, as stored.

    ``position`` is the last event the read model holds (applied, or skipped by an
    operator). A paused projection names the event it failed on (``failed_*``) and the
    error; ``error`` is empty otherwise. Times are seconds since the epoch; ``heartbeat``
    is when a runner last said it was alive (0.0: never). A rebuild's row (``NAME~rebuild``)
    notes when its run began (``started_at``) and its position then (``started_position``),
    for its rate.
    """

    name: str
    version: int
    position: int
    state: str
    lag_threshold: float = 10.0
    heartbeat: float = 0.0
    runner: str = ""
    error: str = ""
    failed_position: int = 0
    failed_event_id: str = ""
    failed_event_type: str = ""
    failed_at: float = 0.0
    updated_at: float = 0.0
    started_at: float = 0.0
    started_position: int = 0


@dataclass(frozen=True)
class Skip:
    """An event an operator skipped, with the error it caused, who and why."""

    name: str
    position: int
    event_id: str
    event_type: str
    error: str
    skipped_at: float
    by: str
    note: str


@dataclass(frozen=True)
class LogHead:
    """Where the global log ends, and how far behind a position is.

    ``head`` is the newest committed position and ``head_time`` its commit time;
    ``behind`` how many events come after the position asked about, and
    ``position_time`` the commit time of the last event at or before it (of the first
    event after it when there is none). Times are seconds since the epoch, 0.0 if none.
    """

    head: int
    head_time: float
    behind: int
    position_time: float

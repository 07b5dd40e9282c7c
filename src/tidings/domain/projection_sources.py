"""What a projection fed by a broker stream knows of each source service it is fed by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceCheckpoint:
    """Where a stream projection stands on one source: ``position`` is the highest
    position of the source's log it applied (0: no message carried one yet),
    ``event_time`` the time in the last message applied and ``applied_at`` when (seconds
    since the epoch); ``positioned`` says whether that message carried its position."""

    name: str
    source: str
    position: int
    event_time: float
    applied_at: float
    positioned: bool
    events: int

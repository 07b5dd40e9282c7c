"""The console's lag history: an hour of samples per projection, scaled into a chart."""

from __future__ import annotations

from tidings.application.projections.status import ProjectionStatus
from tidings.console.lag import HOUR, LagHistory, chart


def status(lag: int) -> ProjectionStatus:
    """Projection ``p`` at ``lag`` events behind a head of 10."""
    return ProjectionStatus("p", 1, "running", 10 - lag, 10, lag, 0.0, 10.0, 0.0, "r")


def test_samples_older_than_an_hour_are_forgotten_and_the_chart_spans_the_rest() -> None:
    """Three samples over an hour and a half keep the last two; the highest lag is the top."""
    now = [0.0]
    history = LagHistory(clock=lambda: now[0])
    for at, lag in ((0.0, 9), (HOUR / 2, 4), (HOUR * 1.5, 0)):
        now[0] = at
        history.add([status(lag)])
    kept = history.of("p")
    assert [s.events for s in kept] == [4, 0]
    drawn = chart(kept, width=100, height=50)
    assert drawn["top"] == 4
    assert drawn["points"] == "0.0,0.0 100.0,50.0"

"""A rebuild under way shows in the projections' status: state rebuilding, the shadow's
position, the head, its rate since its run began and the time left at that rate."""

from __future__ import annotations

import pytest

import tidings
from tests.conftest import MakeStore
from tests.contract.test_projection_rebuild import (  # noqa: F401 - its autouse fixture
    _unique_tables,
    catch_up,
    totals,
    write,
)
from tidings.application.projections import ProjectionRunner, ProjectionStatus
from tidings.testing.contract import Counted, Named


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


def _rebuilding(runner: ProjectionRunner) -> ProjectionStatus:
    [found] = [s for s in runner.status() if s.name == "rb-totals~rebuild"]
    return found


def test_status_shows_a_rebuilds_position_head_rate_and_eta(store: tidings.Store) -> None:
    """Thirty events: the run begins at t=1000, reaches position 10 at t=1002 (5 events/s,
    20 left: 4 s); resumed by another process at t=2000 it counts from its position then,
    and reaches 20 at t=2005 (2 events/s, 10 left: 5 s)."""
    for _ in range(10):
        write(store, [1, 2, 3])
    live = store.projections([totals(1)])
    catch_up(live)
    now = [1000.0]
    job = store.rebuild(totals(2), batch=10, clock=lambda: now[0])
    job.begin()
    assert (_rebuilding(live).rate, _rebuilding(live).eta_seconds) == (None, None)
    now[0] = 1002.0
    job.step()
    first = _rebuilding(live)
    assert (first.state, first.position, first.head) == ("rebuilding", 10, 30)
    assert (first.rate, first.eta_seconds) == (5.0, 4.0)
    assert "rebuilding  position 10 of 30" in first.describe()
    assert "5 events/s, ETA 4 s" in first.describe()
    now[0] = 2000.0
    again = store.rebuild(totals(2), batch=10, clock=lambda: now[0])
    again.begin()  # resumed: the rate counts from here, not from the first run
    now[0] = 2005.0
    again.step()
    resumed = _rebuilding(live)
    assert (resumed.position, resumed.rate, resumed.eta_seconds) == (20, 2.0, 5.0)
    assert live.status(["rb-totals"])[0].rate is None  # the live row has none

"""A rebuild beside a live system: a verified rebuild while a writer keeps committing and
the live runner keeps applying swaps and equals a fresh build; a rebuild under way shows
in the status with its position, the head, its rate and the time left."""

from __future__ import annotations

import itertools

import tidings
from tests.contract.test_projection_rebuild import (  # noqa: F401 - its fixtures
    _unique_tables,
    catch_up,
    rows,
    store,
    tab,
    totals,
    write,
)
from tidings.application.projections import ProjectionRunner, ProjectionStatus


def test_a_verified_rebuild_under_a_constant_writer_swaps_and_equals_a_fresh_build(
    store: tidings.Store,  # noqa: F811 - the fixture imported above
) -> None:
    """The interleaving is laid out step by step, not left to timing. Each round commits
    an order, moves the shadow a batch and, every other round, the live runner a batch:
    the live version falls behind the shadow and gets ahead again.
    The catch-up for a verified swap stops at the live position; the swap brings the
    shadow to the live position reached meanwhile, finds the two equal and swaps. The
    new version's runner then takes the events after the swap: the result equals a
    build from scratch, row by row (an event applied twice or lost changes a total and
    the rows of seen)."""
    steps = itertools.count(1)
    for _ in range(6):
        write(store, [next(steps), next(steps)], name="a")
    live = store.projections([totals(1)], batch=3)
    catch_up(live)
    job = store.rebuild(totals(2), batch=2)
    job.begin()
    for round_ in range(10):
        write(store, [next(steps), next(steps), next(steps)], name=f"r{round_}")
        job.step(until_live=True)
        if round_ % 2:
            live.run_once()
    write(store, [next(steps)])
    live.run_once()  # the live runner is now behind the head
    job.catch_up(until_live=True)
    shadow = job.progress()
    [live_now] = [s for s in live.status() if s.name == "rb-totals"]
    assert shadow.position == live_now.position < shadow.head
    write(store, [next(steps), next(steps)])
    live.run_once()  # ahead of the shadow: the swap applies the difference
    write(store, [next(steps)])  # past both: the new version's runner takes it
    swapped = job.swap(verify=True)
    [after] = [s for s in live.status() if s.name == "rb-totals"]
    assert (swapped.version, after.version) == (2, 2)
    assert swapped.position > shadow.position
    write(store, [next(steps)], name="late")
    catch_up(store.projections([totals(2)]))
    fresh = totals(1, name="fresh")
    catch_up(store.projections([fresh]))
    assert rows(store, tab("totals")) == rows(store, tab("fresh"))
    assert rows(store, tab("seen")) == rows(store, tab("freshseen"))
    assert len(rows(store, tab("seen"))) == next(steps) - 1


def _rebuilding(runner: ProjectionRunner) -> ProjectionStatus:
    [found] = [s for s in runner.status() if s.name == "rb-totals~rebuild"]
    return found


def test_status_shows_a_rebuilds_position_head_rate_and_eta(
    store: tidings.Store,  # noqa: F811 - the fixture imported above
) -> None:
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

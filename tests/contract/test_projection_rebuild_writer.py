"""A verified rebuild while a writer keeps committing and the live runner keeps applying:
the swap happens, and the read model holds every event once, as a fresh build does. The
interleaving is laid out step by step: commits between every batch of the shadow and of
the live runner, the live runner behind the shadow and ahead of it, commits between the
catch-up and the swap and after it."""

from __future__ import annotations

import itertools

import pytest

import tidings
from tests.conftest import MakeStore
from tests.contract.test_projection_rebuild import (  # noqa: F401 - its autouse fixture
    _unique_tables,
    catch_up,
    rows,
    tab,
    totals,
    write,
)
from tidings.testing.contract import Counted, Named


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


def test_a_verified_rebuild_under_a_constant_writer_swaps_and_equals_a_fresh_build(
    store: tidings.Store,
) -> None:
    """Each round commits an order, moves the shadow a batch and, every other round, the
    live runner a batch: the live version falls behind the shadow and gets ahead again.
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

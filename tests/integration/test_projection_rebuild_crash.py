"""SIGKILL ``tidings projections rebuild`` halfway, while the live version serves and
events keep arriving: run again, it goes on from its own checkpoint, verifies the new
version against the live one and swaps it in, equal to a build from scratch."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter as Tally
from pathlib import Path

import pytest

import tidings
from tidings.testing.contract import Counted, Counter

from .faults import kill_mid_work, to_be_killed
from .projection_process import totals
from .test_projection_crash import database, position, rows, write

ROOT = Path(__file__).parents[2]

__all__ = ["database"]  # the fixture: a fresh SQLite file or PostgreSQL schema per run


def kill_rebuilds_then_finish(
    database: tuple[str, str], tmp_path: Path, *, kills: int, events: int, seed: int
) -> None:
    url, schema = database
    rng = random.Random(seed)
    store = tidings.connect(url, schema=schema, registry=tidings.EventRegistry([Counted]))
    counters = [Counter(f"k{i}") for i in range(12)]
    write(store, counters, events, rng)
    live = store.projections([totals("rbcrash", 0.0)], batch=500)
    log = tmp_path / "rebuild.log"
    command = [
        sys.executable, "-m", "tidings", "projections", "rebuild", "rbcrash", "--db", url,
        "--schema", schema, "--projections", "tests.integration.rebuild_process:PROJECTIONS",
        "--batch", "40", "--verify", "--every", "0.2",
    ]  # fmt: skip
    try:
        while live.run_once():
            pass
        for _ in range(kills):
            with log.open("ab") as out:
                rebuild = subprocess.Popen(
                    command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=to_be_killed()
                )
            before = position(store, "rbcrash~rebuild")
            try:
                kill_mid_work(
                    rebuild,
                    lambda: position(store, "rbcrash~rebuild"),
                    before,
                    "a batch of the rebuild",
                    rng=rng,
                    most=0.1,
                    log=log,
                )
            finally:
                if rebuild.poll() is None:
                    rebuild.kill()
                    rebuild.wait()
            write(store, counters, rng.randint(0, 60), rng)  # more arrive; the live serves
            while live.run_once():
                pass
            [shown] = [s for s in live.status() if s.name == "rbcrash"]
            assert (shown.version, shown.lag_events) == (1, 0)
        killed_at = position(store, "rbcrash~rebuild")
        assert 0 < killed_at < store.events.count(), "the kills did not land mid-way"
        finished = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert f"from position {killed_at}" in finished.stderr  # it went on
        assert "/s, ETA" in finished.stderr  # the progress line
        assert "(verified equal)" in finished.stdout
        scratch = store.projections([totals("scratch", 0.0)], batch=1000)
        while scratch.run_once():
            pass
        every = [r.event_id for r in store.events.read_all(0, 10**6)]
        applied = Tally(r[0] for r in rows(store, "SELECT event_id FROM rbcrash_seen"))
        assert {e: n for e, n in applied.items() if n > 1} == {}, "applied twice"
        assert set(applied) == set(every), "an event was skipped"
        assert rows(store, "SELECT * FROM rbcrash_totals ORDER BY id") == rows(
            store, "SELECT * FROM scratch_totals ORDER BY id"
        )
        [shown] = [s for s in live.status() if s.name == "rbcrash"]
        assert (shown.version, shown.position) == (2, len(every))
    finally:
        live.close()
        store.close()


def test_a_rebuild_killed_halfway_goes_on_from_its_checkpoint(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """Two SIGKILLs in the middle of a rebuild of 1,500 events."""
    kill_rebuilds_then_finish(database, tmp_path, kills=2, events=1500, seed=16)


@pytest.mark.slow
def test_a_rebuild_killed_ten_times_goes_on_and_ends_equal(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """Ten SIGKILLs over 8,000 events."""
    kill_rebuilds_then_finish(database, tmp_path, kills=10, events=8000, seed=1616)

"""SIGKILL ``tidings projections run`` in the middle of its batches, many times, while
events keep arriving: no event is applied twice and none is skipped, and the read model
equals one built from scratch."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.testing.contract import Counted, Counter

from .faults import kill_mid_work, to_be_killed
from .projection_process import totals

ROOT = Path(__file__).parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URL, schema) of a fresh database for one run."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}", "public"
        return
    import psycopg

    url: str = request.getfixturevalue("pg_url")
    schema = f"crash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    # the projection's own tables land in the first schema of the search path
    yield f"{url}?options=-csearch_path%3D{schema}", schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def write(store: tidings.Store, counters: list[Counter], events: int, rng: random.Random) -> None:
    """``events`` Counted events, ten per unit of work, over random counters."""
    for start in range(0, events, 10):
        chosen = rng.sample(counters, 3)
        for i in range(min(10, events - start)):
            chosen[i % 3].increment(rng.randint(1, 9))
        with store.unit_of_work() as uow:
            uow.track(*chosen)


def position(store: tidings.Store, name: str) -> int:
    """The projection's checkpoint, read without waiting on the runner: a read-only
    connection on SQLite (a unit of work would queue for the write lock behind batch
    after batch), a plain query on PostgreSQL."""
    table = store.database.tables["projections"]  # type: ignore[attr-defined]
    path = getattr(store.database, "path", None)
    sql = f"SELECT position FROM {table} WHERE name = {'?' if path else '%s'}"
    if path is not None:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            found = conn.execute(sql, (name,)).fetchall()
    else:
        found = store.database.query(sql, (name,))  # type: ignore[attr-defined]
    return int(found[0][0]) if found else 0


def rows(store: tidings.Store, sql: str) -> list[Any]:
    with store.unit_of_work() as uow:
        return [tuple(r) for r in uow.execute(sql).fetchall()]


def kill_runners_again_and_again(
    database: tuple[str, str], tmp_path: Path, *, kills: int, events: int, seed: int
) -> None:
    url, schema = database
    rng = random.Random(seed)
    store = tidings.connect(url, schema=schema, registry=tidings.EventRegistry([Counted]))
    counters = [Counter(f"k{i}") for i in range(12)]
    write(store, counters, events, rng)
    log = tmp_path / "runner.log"
    command = [
        sys.executable, "-m", "tidings", "projections", "run", "--db", url, "--schema", schema,
        "--projections", "tests.integration.projection_process:PROJECTIONS", "--batch", "40",
    ]  # fmt: skip
    killed = 0
    try:
        for _ in range(kills):
            with log.open("ab") as out:
                runner = subprocess.Popen(
                    command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=to_be_killed()
                )
            before = position(store, "crash")
            try:
                kill_mid_work(
                    runner,
                    lambda: position(store, "crash"),
                    before,
                    "a batch of the projection",
                    rng=rng,
                    most=0.08,
                    log=log,
                )
            finally:
                if runner.poll() is None:  # the wait failed: leave no runner behind
                    runner.kill()
                    runner.wait()
            killed += 1
            write(store, counters, rng.randint(0, 60), rng)  # more arrive meanwhile
        finisher = store.projections([totals("crash", 0.0)], batch=500)
        while finisher.run_once():
            pass
        scratch = store.projections([totals("scratch", 0.0)], batch=1000)
        while scratch.run_once():
            pass
        every = [r.event_id for r in store.events.read_all(0, 10**6)]
        applied = Tally(r[0] for r in rows(store, "SELECT event_id FROM crash_seen"))
        twice = {e: n for e, n in applied.items() if n > 1}
        assert twice == {}, f"events applied more than once: {len(twice)}"
        assert set(applied) == set(every), "an event was skipped"
        assert rows(store, "SELECT * FROM crash_totals ORDER BY id") == rows(
            store, "SELECT * FROM scratch_totals ORDER BY id"
        )
        assert killed == kills
        print(f"killed the runner {killed} times over {len(every)} events")
    finally:
        store.close()


def test_a_runner_killed_mid_batch_applies_every_event_once(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """Five SIGKILLs at random moments in the middle of batches of 40 events."""
    kill_runners_again_and_again(database, tmp_path, kills=5, events=1200, seed=15)


@pytest.mark.slow
def test_a_runner_killed_mid_batch_thirty_times_applies_every_event_once(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """Thirty SIGKILLs over 8,000 events."""
    kill_runners_again_and_again(database, tmp_path, kills=30, events=8000, seed=1515)

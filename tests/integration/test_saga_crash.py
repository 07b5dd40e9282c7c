"""SIGKILL an orchestrator at random moments, many times, on SQLite and PostgreSQL: every
saga still ends, no effect takes place twice, and no step runs after its saga ended."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tidings

from .faults import kill_mid_work, to_be_killed
from .saga_process import effects_table

PROCESS = Path(__file__).with_name("saga_process.py")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Target:
    """Where the orchestrators run: a database URL, and on PostgreSQL a schema of its own."""

    url: str
    schema: str = ""

    def args(self) -> list[str]:
        """The orchestrator process's arguments after the saga count."""
        return [self.schema] if self.schema else []

    def connect(self) -> tidings.Store:
        """A store on the target's tables."""
        return tidings.connect(self.url, **({"schema": self.schema} if self.schema else {}))  # type: ignore[arg-type]

    def transitions(self) -> int:
        """How many saga transitions the database holds (never waits on a writer)."""
        if not self.schema:
            path = self.url.removeprefix("sqlite:///")
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                sql = "SELECT COUNT(*) FROM tidings_saga_transitions"
                return int(conn.execute(sql).fetchone()[0])
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            sql = f"SELECT COUNT(*) FROM {self.schema}.tidings_saga_transitions"
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A fresh database (SQLite file, or a PostgreSQL schema dropped afterwards)."""
    if request.param == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'sagas.db'}")
        return
    import psycopg

    pg_url = request.getfixturevalue("pg_url")
    found = Target(pg_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield found
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {found.schema} CASCADE")


def kill_and_check(target: Target, log: Path, sagas: int, kills: int, seed: int) -> None:
    """``kills`` orchestrators SIGKILLed mid-work, then one left to finish: every saga is
    COMPLETED, COMPENSATED or NEEDS_INTERVENTION; each action and compensation took
    effect at most once, and none while its saga had ended."""
    target.connect().close()
    rng = random.Random(seed)
    command = [sys.executable, str(PROCESS), target.url, str(sagas), *target.args()]
    killed = 0
    for _ in range(kills):
        with log.open("ab") as out:
            worker = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=to_be_killed()
            )
        before = target.transitions() + rng.randint(0, sagas)  # a random moment
        try:
            kill_mid_work(
                worker, target.transitions, before, "saga transitions", rng=rng, most=0.05, log=log
            )
            killed += 1
        except BaseException:
            if worker.poll() == 0:  # it finished every saga before the kill
                break
            raise
    last = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert last.returncode == 0, last.stderr[-3000:]
    assert killed > 0
    with target.connect() as store:
        results = store.sagas().listing(limit=sagas + 1)
        with store.unit_of_work() as uow:
            sql = f"SELECT saga, what, state FROM {effects_table(target.schema)}"
            rows: list[Any] = uow.execute(sql).fetchall()
    print(f"killed {killed} orchestrators", Counter(r.state for r in results))
    assert len(results) == sagas
    assert {r.state for r in results} <= {"COMPLETED", "COMPENSATED", "NEEDS_INTERVENTION"}
    twice = {k: c for k, c in Counter((r[0], r[1]) for r in rows).items() if c > 1}
    assert twice == {}, f"effects that took place more than once: {twice}"
    late = [r for r in rows if r[2] not in ("RUNNING", "COMPENSATING")]
    assert late == [], f"effects written while their saga had ended: {late}"
    by_saga = {r.saga_id: r for r in results}
    for saga, what, _ in rows:  # every effect committed with its transition
        done = (
            by_saga[saga].compensated if what.startswith("undo") else by_saga[saga].executed_steps
        )
        assert what.removeprefix("undo ") in done, f"{what} of {saga} took effect unrecorded"


def test_sagas_end_once_each_across_orchestrators_killed_at_random_moments(
    target: Target, tmp_path: Path
) -> None:
    """The suite's share: 20 sagas, three orchestrators killed."""
    kill_and_check(target, tmp_path / "orchestrator.log", sagas=20, kills=3, seed=1402)


@pytest.mark.slow
def test_sagas_end_once_each_across_many_orchestrators_killed_at_random_moments(
    target: Target, tmp_path: Path
) -> None:
    """The long run: 400 sagas, twenty orchestrators killed."""
    kill_and_check(target, tmp_path / "orchestrator.log", sagas=400, kills=20, seed=1403)

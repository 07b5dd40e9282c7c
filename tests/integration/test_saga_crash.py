"""SIGKILL an orchestrator at random moments, many times: every saga still ends, no
effect takes place twice, and no step runs after its saga ended."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import tidings

from .faults import kill_mid_work, to_be_killed

PROCESS = Path(__file__).with_name("saga_process.py")
SAGAS = 300
KILLS = 12


def transitions(url: str) -> int:
    """How many saga transitions the database holds (read only: never waits on a writer)."""
    path = url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tidings_saga_transitions").fetchone()[0])


def test_sagas_end_once_each_across_orchestrators_killed_at_random_moments(
    tmp_path: Path,
) -> None:
    """KILLS orchestrators SIGKILLed mid-work, then one left to finish: every saga is
    COMPLETED, COMPENSATED or NEEDS_INTERVENTION; each action and compensation took
    effect at most once, and none while its saga had ended."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    tidings.connect(url).close()
    rng = random.Random(1402)
    log = tmp_path / "orchestrator.log"
    killed = 0
    for _ in range(KILLS):
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [sys.executable, str(PROCESS), url, str(SAGAS)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=to_be_killed(),
            )
        before = transitions(url) + rng.randint(0, 250)  # a random moment, in transitions
        try:
            kill_mid_work(
                worker,
                lambda: transitions(url),
                before,
                "saga transitions",
                rng=rng,
                most=0.05,
                log=log,
            )
            killed += 1
        except BaseException:
            if worker.poll() == 0:  # it finished every saga before the kill
                break
            raise
    last = subprocess.run(
        [sys.executable, str(PROCESS), url, str(SAGAS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert last.returncode == 0, last.stderr[-3000:]
    assert killed > 0
    with tidings.connect(url) as store:
        results = store.sagas().listing(limit=SAGAS + 1)
        with store.unit_of_work() as uow:
            rows = uow.execute("SELECT saga, what, state FROM saga_effects").fetchall()
    print(f"killed {killed} orchestrators", Counter(r.state for r in results))
    assert len(results) == SAGAS
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

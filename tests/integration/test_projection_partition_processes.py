"""``tidings projections run --partitions P`` as two processes: they share the parts, the
survivor takes over a stopped one's at once and a killed one's after its lease, and the
read model equals one built by a single runner from scratch, every event applied once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.testing.contract import Counted, Counter

from .cli import run_cli
from .projection_process import totals
from .test_projection_crash import database

ROOT = Path(__file__).parents[2]
PARTS = 4


__all__ = ["database"]  # the fixture: a fresh SQLite file or PostgreSQL schema per run


def write(store: tidings.Store, counters: list[Counter], rounds: int) -> None:
    for step in range(rounds):
        for counter in counters:
            counter.increment(step + 1)
        with store.unit_of_work() as uow:
            uow.track(*counters)


def rows(store: tidings.Store, sql: str) -> list[Any]:
    with store.unit_of_work() as uow:
        return [tuple(r) for r in uow.execute(sql).fetchall()]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


def test_two_worker_processes_share_the_parts_and_take_over(
    database: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = database
    store = tidings.connect(url, schema=schema, registry=tidings.EventRegistry([Counted]))
    counters = [Counter(f"p{i}") for i in range(16)]
    write(store, counters, 10)
    command = [
        sys.executable, "-m", "tidings", "projections", "run", "--db", url, "--schema", schema,
        "--projections", "tests.integration.projection_process:PROJECTIONS", "--batch", "25",
        "--partitions", str(PARTS), "--ttl", "2", "--poll", "0.2", "--every", "0.5",
    ]  # fmt: skip
    logs = [(tmp_path / f"worker-{n}.log").open("wb") for n in range(2)]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]

    def statuses() -> dict[str, dict[str, Any]]:
        shown = run_cli("projections", "status", "--db", url, "--schema", schema, "--json")
        assert shown.returncode == 0, shown.stderr
        return {s["name"]: s for s in map(json.loads, shown.stdout.splitlines())}

    def parts() -> list[dict[str, Any]]:
        found = statuses()
        return [found[f"crash#{p}"] for p in range(PARTS) if f"crash#{p}" in found]

    def at_head() -> bool:
        found = parts()
        return len(found) == PARTS and all(s["lag_events"] == 0 for s in found)

    try:
        wait_for(lambda: at_head() and len({s["runner"] for s in parts()}) == 2, "both share")
        workers[1].send_signal(signal.SIGTERM)  # a clean stop: its parts go at once
        assert workers[1].wait(timeout=60) == 0
        write(store, counters, 5)
        wait_for(lambda: at_head() and len({s["runner"] for s in parts()}) == 1, "one has all")
        workers[1] = subprocess.Popen(command, cwd=ROOT, stdout=logs[1], stderr=subprocess.STDOUT)
        wait_for(lambda: len({s["runner"] for s in parts()}) == 2, "the new one has a share")
        workers[0].kill()  # dies holding its parts: the survivor waits out the lease
        workers[0].wait()
        write(store, counters, 5)
        wait_for(at_head, "the survivor took the dead one's parts over")
        survivor = {s["runner"] for s in parts() if s["state"] == "running"}
        assert len(survivor) == 1
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
        for log in logs:
            log.close()
    scratch = store.projections([totals("scratch", 0.0)], batch=1000)
    while scratch.run_once():
        pass
    every = [r.event_id for r in store.events.read_all(0, 10**6)]
    applied = Tally(r[0] for r in rows(store, "SELECT event_id FROM crash_seen"))
    assert {e: n for e, n in applied.items() if n > 1} == {}, "an event was applied twice"
    assert set(applied) == set(every), "an event was skipped"
    assert rows(store, "SELECT * FROM crash_totals ORDER BY id") == rows(
        store, "SELECT * FROM scratch_totals ORDER BY id"
    )
    store.close()

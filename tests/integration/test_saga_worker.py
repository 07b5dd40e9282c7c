"""The saga worker: in process and as ``tidings sagas run``, it drives sagas whose timers
fire, wakes for the earliest timer rather than its longest sleep, leaves a saga of an
unknown version alone, and stops cleanly on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step

from .cli import run_cli

PATIENCE = 60.0

DEFINITIONS = """
from tidings import RetryPolicy, SagaDefinition, Step

saga = SagaDefinition("worked", [
    Step("order", lambda ctx: None),
    Step("pay", lambda ctx: None, retry=RetryPolicy(1, delays=(0.3,))),  # the provider is back
])
"""


def wait_for(
    check: object,
    what: str,
    process: subprocess.Popen[str] | None = None,
    patience: float = PATIENCE,
) -> None:
    """Poll ``check()`` until true; fail after ``patience`` seconds or if ``process`` exits."""
    deadline = time.monotonic() + patience
    while not check():  # type: ignore[operator]
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the worker exited ({process.returncode}) before {what}\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {patience} s")
        time.sleep(0.05)


def states(url: str) -> list[str]:
    """The state of every saga in the database."""
    with tidings.connect(url) as store:
        return sorted(s.state for s in store.sagas().listing())


def test_the_worker_wakes_for_the_earliest_timer_not_its_longest_sleep(
    make_sql_store: MakeStore,
) -> None:
    """With a 600 s interval, a retry due in 0.3 s is driven once due: the worker slept
    until the timer, not for its interval. Idle afterwards, it makes a handful of passes,
    not a busy loop."""
    tried: set[int] = set()

    def pay(ctx: tidings.StepContext) -> None:
        if not tried:
            tried.add(1)
            raise TimeoutError("slow")

    definition = SagaDefinition("timed", [Step("pay", pay, retry=RetryPolicy(1, (0.3,)))])
    store = make_sql_store()
    worker = tidings.SagaWorker(store, [definition], interval=600.0, by="worker-a")
    saga = worker.sagas.start(definition, {})
    assert saga.state == "RUNNING"

    def ended() -> bool:
        found = worker.sagas.get(saga.saga_id)
        return found is not None and found.state == "COMPLETED"

    worker.start()
    try:
        wait_for(ended, "the retry", patience=PATIENCE / 2)
        passes = worker.stats.passes
        time.sleep(0.5)
        assert worker.stats.passes - passes <= 2
    finally:
        worker.stop()
    kinds = [(t.kind, t.by) for t in worker.sagas.history(saga.saga_id)]
    assert ("step_succeeded", "worker-a") in kinds


def test_bad_worker_settings_say_what_to_give(tmp_path: Path) -> None:
    """A zero interval or an empty batch is refused with what to give instead."""
    with (
        tidings.connect(f"sqlite:///{tmp_path / 'x.db'}") as store,
        pytest.raises(ValueError, match="interval above 0"),
    ):
        tidings.SagaWorker(store, [], interval=0)


def test_tidings_sagas_run_drives_due_sagas_refuses_unknown_versions_and_stops_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five sagas waiting on retry timers end COMPLETED under the worker; a saga of a
    version its definitions lack stays as it was and is counted as refused; SIGTERM ends
    the worker with exit code 0 and a last progress line."""
    (tmp_path / "worker_saga_defs.py").write_text(DEFINITIONS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    first_try_fails = SagaDefinition(
        "worked",
        [
            Step("order", lambda ctx: None),
            Step("pay", lambda ctx: 1 / 0, retry=RetryPolicy(1, (0.3,))),
        ],
    )
    newer = SagaDefinition("worked", first_try_fails.steps, version=9)
    with tidings.connect(url) as store:
        sagas = store.sagas(clock=lambda: 1_000.0)  # their retries are due long since
        for n in range(5):
            sagas.start(first_try_fails, {"n": n}, saga_id=f"s-{n}")
        sagas.start(newer, {"n": 99}, saga_id="from-newer-code")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings",
            "sagas",
            "run",
            "--db",
            url,
            "--definitions",
            "worker_saga_defs:saga",
            "--interval",
            "0.5",
            "--every",
            "0.2",
            "--by",
            "worker-b",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: states(url) == ["COMPLETED"] * 5 + ["RUNNING"], "the sagas' ends", worker)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=PATIENCE)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, out + err
    assert "saga worker worker-b" in err
    last = err.strip().splitlines()[-1]
    assert "refused 1" in last, err
    assert re.search(r"transitions [1-9]", last), err
    assert "from-newer-code refused" in err
    assert "knows versions [1]" in err
    with tidings.connect(url) as store:
        kept = store.sagas().get("from-newer-code")
        history = store.sagas().history("s-0")
    assert kept is not None
    assert (kept.state, kept.definition_version) == ("RUNNING", 9)
    assert ("step_succeeded", "pay", "worker-b") in [(t.kind, t.step, t.by) for t in history]


def test_tidings_sagas_run_refuses_bad_options_with_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Definitions that are not definitions, and a zero interval: an error line each, no
    traceback, no worker."""
    (tmp_path / "worker_saga_defs.py").write_text(DEFINITIONS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    db = f"sqlite:///{tmp_path / 'sagas.db'}"
    wrong = run_cli("sagas", "run", "--db", db, "--definitions", "worker_saga_defs:RetryPolicy")
    assert wrong.returncode != 0
    assert "must be a SagaDefinition or a list of SagaDefinitions" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    zero = run_cli(
        "sagas", "run", "--db", db, "--definitions", "worker_saga_defs:saga", "--interval", "0"
    )
    assert zero.returncode != 0
    assert "give an interval above 0 seconds" in zero.stderr

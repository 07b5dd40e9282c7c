"""``tidings projections``: a runner process, a poison event seen in ``status``, resumed
with ``retry`` after a fix or passed with ``skip``, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidings
from tidings.testing.contract import Counted, Counter

from .cli import run_cli

PROJECTIONS = """
from pathlib import Path
from tidings.application.projections import Projection
from tidings.testing.contract import Counted

FIXED = Path(__file__).with_name("fixed")


def counted(uow, e):
    if e.step == 13 and not FIXED.exists():
        raise ValueError("thirteen is not a step we know")
    uow.execute(
        "INSERT INTO cli_totals VALUES (:id, :s) ON CONFLICT (id)"
        " DO UPDATE SET total = cli_totals.total + excluded.total",
        {"id": e.aggregate_id, "s": e.step},
    )


def skipped_too(uow, e):
    if e.step == 13:
        raise ValueError("not this one either")


projections = [
    Projection(
        "cli-totals",
        {Counted: counted},
        schema=["CREATE TABLE IF NOT EXISTS cli_totals (id TEXT PRIMARY KEY, total INTEGER)"],
    ),
    Projection("cli-skipper", {Counted: skipped_too}),
]
"""


def wait_for(check: object, what: str, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not check():  # type: ignore[operator]
        if runner.poll() is not None:
            pytest.fail(f"the runner exited ({runner.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_a_runner_process_is_operated_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner pauses both projections on the poison event; status shows where and
    why; retry after the fix resumes one, skip passes the event in the other; SIGTERM
    stops the runner cleanly and status says stopped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_projections.py").write_text(PROJECTIONS)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    with tidings.connect(db, registry=tidings.EventRegistry([Counted])) as store:
        counter = Counter("o-1")
        for step in (1, 13, 2):
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(counter)
    runner = subprocess.Popen(
        [sys.executable, "-m", "tidings", "projections", "run", "--db", db,
         "--projections", "cli_projections:projections", "--every", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def statuses() -> dict[str, dict[str, object]]:
            shown = run_cli("projections", "status", "--db", db, "--json")
            assert shown.returncode == 0, shown.stderr
            return {s["name"]: s for s in map(json.loads, shown.stdout.splitlines())}

        wait_for(
            lambda: {s["state"] for s in statuses().values()} == {"paused"},
            "both projections paused",
            runner,
        )
        shown = run_cli("projections", "status", "--db", db)
        assert "cli-totals v1  paused  position 1 of 3  lag 2 events" in shown.stdout
        assert "paused on position 2" in shown.stdout
        assert "ValueError: thirteen is not a step we know" in shown.stdout

        (tmp_path / "fixed").touch()
        retried = run_cli("projections", "retry", "cli-totals", "--db", db)
        assert retried.returncode == 0, retried.stderr
        assert "resumes at position 2" in retried.stdout
        wrong = run_cli("projections", "skip", "cli-skipper", "--position", "3", "--db", db)
        assert wrong.returncode == 2
        assert "paused on the event at position 2, not 3" in wrong.stderr
        skipped = run_cli(
            "projections", "skip", "cli-skipper", "--position", "2", "--db", db,
            "--by", "ops", "--note", "known bad",
        )  # fmt: skip
        assert skipped.returncode == 0, skipped.stderr
        wait_for(
            lambda: all(s["lag_events"] == 0 for s in statuses().values()),
            "both projections at the head",
            runner,
        )
        runner.terminate()
        output, _ = runner.communicate(timeout=60)
        assert runner.returncode == 0, output
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert "projections cli-totals, cli-skipper" in output
    final = statuses()
    assert {s["state"] for s in final.values()} == {"stopped"}
    with tidings.connect(db) as store, store.unit_of_work() as uow:
        assert uow.execute("SELECT total FROM cli_totals").fetchall() == [(16,)]
    missing = run_cli("projections", "retry", "nope", "--db", db)
    assert missing.returncode == 2
    assert "no projection is named 'nope'" in missing.stderr
    bad = run_cli("projections", "run", "--db", db, "--projections", "cli_projections:FIXED")
    assert bad.returncode == 2
    assert "must be a Projection or a list of them" in bad.stderr


def test_reset_asks_first_and_forgets_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --yes reset asks, and a no keeps the checkpoint; with it the checkpoint is
    gone (the projection starts again from position 0); a name that is not there is
    said so."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_projections.py").write_text(PROJECTIONS)
    db = f"sqlite:///{tmp_path / 'reset.db'}"
    shown = run_cli("projections", "status", "--db", db)
    assert "no projections have run on this database yet" in shown.stdout
    with tidings.connect(db, registry=tidings.EventRegistry([Counted])) as store:
        projections = runpy.run_path(str(tmp_path / "cli_projections.py"))["projections"]
        store.projections(projections).run_once()
    refused = run_cli("projections", "reset", "cli-totals", "--db", db, stdin="n\n")
    assert refused.returncode != 0
    assert "Aborted" in refused.stderr
    reset = run_cli("projections", "reset", "cli-totals", "--db", db, "--yes")
    assert "starts again from position 0" in reset.stdout
    shown = run_cli("projections", "status", "--db", db, "--json")
    assert [json.loads(line)["name"] for line in shown.stdout.splitlines()] == ["cli-skipper"]
    gone = run_cli("projections", "reset", "cli-totals", "--db", db, "--yes")
    assert gone.returncode == 2
    assert "no projection is named 'cli-totals'" in gone.stderr


def test_pause_holds_a_projection_with_who_and_why_and_retry_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pause`` marks the projection paused by whom and why, as status shows; pausing it
    again is refused; ``retry`` resumes it after its position."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_projections.py").write_text(PROJECTIONS)
    db = f"sqlite:///{tmp_path / 'pause.db'}"
    with tidings.connect(db, registry=tidings.EventRegistry([Counted])) as store:
        projections = runpy.run_path(str(tmp_path / "cli_projections.py"))["projections"]
        store.projections(projections).run_once()
    held = run_cli(
        *("projections", "pause", "cli-totals", "--db", db), *("--note", "disk full", "--by", "ops")
    )
    assert held.returncode == 0, held.stderr
    assert "projection cli-totals: paused at position 0" in held.stdout
    shown = run_cli("projections", "status", "--db", db)
    assert "cli-totals v1  paused" in shown.stdout
    assert "paused by ops: disk full" in shown.stdout
    again = run_cli("projections", "pause", "cli-totals", "--db", db)
    assert again.returncode == 2
    assert "cannot be paused: it is paused" in again.stderr
    resumed = run_cli("projections", "retry", "cli-totals", "--db", db)
    assert "projection cli-totals: resumes after position 0" in resumed.stdout


def test_a_projection_run_in_parts_is_paused_and_resumed_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named without a part, ``pause`` holds every part of a projection run with
    ``--partitions`` (a part paused already is said to be so), and ``retry`` resumes each
    paused part; a part's own name still acts on that part alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_projections.py").write_text(PROJECTIONS)
    db = f"sqlite:///{tmp_path / 'parts.db'}"
    with tidings.connect(db, registry=tidings.EventRegistry([Counted])) as store:
        projections = runpy.run_path(str(tmp_path / "cli_projections.py"))["projections"]
        workers = store.projections(projections[:1], partitions=3)
        workers.run_once()
        workers.close()
    one = run_cli("projections", "pause", "cli-totals#1", "--db", db)
    assert one.returncode == 0, one.stderr
    assert "projection cli-totals#1: paused at position 0" in one.stdout
    held = run_cli("projections", "pause", "cli-totals", "--db", db, "--by", "ops")
    assert held.returncode == 0, held.stderr
    assert "projection cli-totals#0: paused at position 0" in held.stdout
    assert "projection cli-totals#1: paused already" in held.stdout
    assert "projection cli-totals#2: paused at position 0" in held.stdout
    shown = run_cli("projections", "status", "--db", db)
    assert shown.stdout.count("paused by ops") == 2, shown.stdout
    resumed = run_cli("projections", "retry", "cli-totals", "--db", db)
    assert resumed.returncode == 0, resumed.stderr
    for part in range(3):
        assert f"projection cli-totals#{part}: resumes after position 0" in resumed.stdout
    shown = run_cli("projections", "status", "--db", db)
    assert "paused" not in shown.stdout, shown.stdout
    none = run_cli("projections", "retry", "cli-totals", "--db", db)
    assert "none of its 3 parts is paused" in none.stdout


REBUILD = """
from tidings.application.projections import Projection
from tidings.testing.contract import Counted


def projection(version, wrong=False):
    def counted(uow, e):
        uow.execute(
            "INSERT INTO rb_totals VALUES (:id, :s) ON CONFLICT (id)"
            " DO UPDATE SET total = rb_totals.total + excluded.total",
            {"id": e.aggregate_id, "s": e.step + (1 if wrong else 0)},
        )

    return Projection(
        "rb", {Counted: counted}, version=version,
        schema=["CREATE TABLE IF NOT EXISTS rb_totals (id TEXT PRIMARY KEY, total INTEGER)"],
    )


v1, v2, wrong = projection(1), projection(2), projection(2, wrong=True)
"""


def test_a_rebuild_is_run_verified_rolled_back_and_its_old_tables_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong version is refused by --verify (exit 2, the first differences listed);
    --no-swap leaves it rebuilding in status; a right one swaps; rollback brings the old
    version back; drop-old asks, then drops."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_rebuild.py").write_text(REBUILD)
    db = f"sqlite:///{tmp_path / 'rebuild.db'}"
    with tidings.connect(db, registry=tidings.EventRegistry([Counted])) as store:
        counter = Counter("o-1")
        for step in (1, 2):
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(counter)
        store.projections([runpy.run_path("cli_rebuild.py")["v1"]]).run_once()
    refused = run_cli(
        "projections", "rebuild", "rb", "--db", db, "--projections", "cli_rebuild:wrong",
        "--verify",
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "rb_totals ('o-1',) (id, total): live ('o-1', 3), new ('o-1', 5)" in refused.stdout
    shown = run_cli("projections", "status", "--db", db)
    assert "rb~rebuild v2  rebuilding  position 2 of 2" in shown.stdout
    built = run_cli(
        "projections", "rebuild", "rb", "--db", db, "--projections", "cli_rebuild:v2",
        "--verify", "--restart", "--no-swap",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (
        "rb~rebuild v2  rebuilding  position 2 of 2"
        in run_cli("projections", "status", "--db", db).stdout
    )
    swapped = run_cli(
        "projections", "rebuild", "rb", "--db", db, "--projections", "cli_rebuild:v2",
        "--verify",
    )  # fmt: skip
    assert swapped.returncode == 0, swapped.stderr
    assert "version 2 swapped in at position 2 (verified equal)" in swapped.stdout
    assert (
        "(kept for: tidings projections rollback rb, or drop-old rb)"
        in run_cli("projections", "status", "--db", db).stdout
    )
    again = run_cli("projections", "rebuild", "rb", "--db", db, "--projections", "cli_rebuild:v2")
    assert again.returncode == 2
    assert "drop-old rb" in again.stderr
    back = run_cli("projections", "rollback", "rb", "--db", db, "--projections", "cli_rebuild:v2")
    assert "version 1 is back at position 2" in back.stdout, back.stderr
    run_cli("projections", "rebuild", "rb", "--db", db, "--projections", "cli_rebuild:v2")
    kept = run_cli(
        "projections", "drop-old", "rb", "--db", db, "--projections", "cli_rebuild:v2", stdin="n\n"
    )
    assert kept.returncode != 0
    dropped = run_cli(
        "projections", "drop-old", "rb", "--db", db, "--projections", "cli_rebuild:v2", "--yes"
    )
    assert "dropped rb_totals__old" in dropped.stdout, dropped.stderr
    unknown = run_cli(
        "projections", "rollback", "nope", "--db", db, "--projections", "cli_rebuild:v2"
    )
    assert unknown.returncode == 2
    assert "has no projection named 'nope'" in unknown.stderr

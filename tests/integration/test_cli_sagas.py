"""``tidings sagas``: the intervention queue operated from the command line."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import pytest

import tidings
from tidings import RetryPolicy, SagaDefinition, Step

from .cli import run_cli

DEFINITIONS = """
from pathlib import Path
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepRefusedError

FIXED = Path(__file__).with_name("fixed")


def refund(ctx):
    if not FIXED.exists():
        raise RuntimeError("payment provider down")


def ship(ctx):
    raise StepRefusedError("out of stock")


saga = SagaDefinition("cli-order", [
    Step("pay", lambda ctx: None, refund, compensation_retry=RetryPolicy(0)),
    Step("ship", ship),
])
"""


@pytest.fixture
def stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """A database with two sagas in NEEDS_INTERVENTION, and the definitions module."""
    (tmp_path / "cli_saga_defs.py").write_text(DEFINITIONS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cli_saga_defs  # type: ignore[import-not-found]

    db = f"sqlite:///{tmp_path / 'sagas.db'}"
    with tidings.connect(db) as store:
        sagas = store.sagas([cli_saga_defs.saga])
        ids = [sagas.start(cli_saga_defs.saga, {"n": n}).saga_id for n in range(2)]
    sys.modules.pop("cli_saga_defs")
    return db, ids


def test_list_and_show_display_the_intervention_queue_and_a_timeline_with_errors(
    stuck: tuple[str, list[str]],
) -> None:
    """The listing names each stuck saga; show gives every transition with its error."""
    db, ids = stuck
    listed = run_cli("sagas", "list", "--db", db, "--state", "needs-intervention")
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in ids)
    shown = run_cli("sagas", "show", "--db", db, ids[0])
    assert shown.returncode == 0, shown.stderr
    assert "compensation_failed pay: RuntimeError: payment provider down" in shown.stdout
    assert "needs_intervention pay" in shown.stdout


def test_retry_and_resolve_are_recorded_with_who_and_why(
    stuck: tuple[str, list[str]], tmp_path: Path
) -> None:
    """retry runs the compensation again once it can succeed; resolve ends a saga by hand;
    both are on the saga's history, with --by or the OS user."""
    db, ids = stuck
    (tmp_path / "fixed").write_text("")
    retried = run_cli(
        "sagas",
        "retry",
        "--db",
        db,
        ids[0],
        "--definitions",
        "cli_saga_defs:saga",
        "--by",
        "ann",
        "--note",
        "provider is back",
    )
    assert retried.returncode == 0, retried.stderr
    assert "COMPENSATED" in retried.stdout
    resolved = run_cli("sagas", "resolve", "--db", db, ids[1], "--note", "refunded by hand")
    assert resolved.returncode == 0, resolved.stderr
    assert (
        run_cli("sagas", "show", "--db", db, ids[0]).stdout.count(
            "operator_retry by ann: provider is back"
        )
        == 1
    )
    shown = run_cli("sagas", "show", "--db", db, ids[1]).stdout
    assert f"operator_resolve by {getpass.getuser()}: refunded by hand" in shown
    assert "RESOLVED" in shown


def test_retry_without_definitions_says_how_to_name_them(stuck: tuple[str, list[str]]) -> None:
    """Steps are code: an action that runs them asks for --definitions."""
    db, ids = stuck
    retried = run_cli("sagas", "retry", "--db", db, ids[0])
    assert retried.returncode != 0
    assert "--definitions package.module:attribute" in retried.stdout + retried.stderr


def test_recover_leaves_a_saga_of_an_unknown_version_alone_and_says_so(
    stuck: tuple[str, list[str]],
) -> None:
    """A due saga of version 2, recovered with version 1's definitions: exit 1 with the
    reason; list and show still display it, with its version."""
    db, _ = stuck
    newer = SagaDefinition(
        "cli-order", [Step("pay", lambda ctx: 1 / 0, retry=RetryPolicy(1, (0.01,)))], version=2
    )
    with tidings.connect(db) as store:
        long_ago = store.sagas(clock=lambda: 1_000.0)  # its retry is due long since
        long_ago.start(newer, {}, saga_id="v2-saga")
    recovered = run_cli("sagas", "recover", "--db", db, "--definitions", "cli_saga_defs:saga")
    assert recovered.returncode == 1
    assert "refused v2-saga" in recovered.stdout
    assert "knows versions [1]" in recovered.stdout
    listed = run_cli("sagas", "list", "--db", db, "--state", "running").stdout
    assert "v2-saga  cli-order v2  RUNNING" in listed
    shown = run_cli("sagas", "show", "--db", db, "v2-saga").stdout
    assert "saga v2-saga (cli-order v2): RUNNING" in shown


def test_show_says_which_reply_a_waiting_saga_awaits_and_until_when(tmp_path: Path) -> None:
    """A saga whose remote step sent its command: show names the step, its phase and the
    step's deadline, and the saga's own deadline."""
    from tests.contract.saga_remote_kit import REGISTRY, remote_saga

    db = f"sqlite:///{tmp_path / 'waiting.db'}"
    with tidings.connect(db, outbox=True, registry=tidings.EventRegistry(REGISTRY)) as store:
        saga = store.sagas().start(remote_saga(deadline=30), {"order_id": "o-1"}, deadline=3600)
    assert saga.state == "RUNNING"
    shown = run_cli("sagas", "show", "--db", db, saga.saga_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1].startswith("  waiting for the reply to pay (action) until 20"), lines
    assert lines[2].startswith("  saga deadline 20"), lines
    assert "command_sent pay" in shown.stdout

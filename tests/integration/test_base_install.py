"""``pip install tidings`` alone, as a new user would: what needs no driver works, and what
needs an extra says in one line which one to install, never with a traceback.

The development environment has every extra, so these run in a virtual environment of
their own that holds the base install only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PG = "postgresql://nobody@127.0.0.1:5432/none"  # never reached: the driver is missing
FILE = "sqlite:///r.db"
NATS = "nats://127.0.0.1:4222"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a virtual environment with tidings and no extra."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    for extra in ("psycopg", "nats", "pika", "sqlalchemy", "cryptography", "prometheus_client"):
        found = subprocess.run(
            [str(venv / "bin" / "python"), "-c", f"import {extra}"],
            capture_output=True,
            check=False,
        )
        assert found.returncode != 0, f"{extra} is installed: this is not a base install"
    return venv / "bin"


def run(base: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One command of the base environment, with no VIRTUAL_ENV of ours leaking in."""
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    return subprocess.run(
        [str(base / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_the_postgresql_ddl_prints_without_its_driver(base: Path) -> None:
    """Printing DDL needs no driver."""
    done = run(base, "tidings", "schema", "--dialect", "postgresql")
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS public.tidings_events" in done.stdout


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        pytest.param(("--db", PG, "--to", "nats://127.0.0.1:4222"), "postgres", id="postgres"),
        pytest.param(
            ("--db", "sqlite:///r.db", "--to", "nats://127.0.0.1:4222"), "nats", id="nats"
        ),
        pytest.param(
            ("--db", "sqlite:///r.db", "--to", "amqp://127.0.0.1/"), "rabbitmq", id="amqp"
        ),
        pytest.param(
            ("--db", "sqlite:///r.db", "--to", NATS, "--metrics-port", "9464"),
            "metrics",
            id="metrics",
        ),
    ],
)
def test_a_worker_whose_extra_is_missing_says_which_to_install(
    base: Path, tmp_path: Path, args: tuple[str, ...], extra: str
) -> None:
    """``tidings relay`` stops at once with one line naming the extra, not a traceback
    (and not after saying it started)."""
    done = run(base, "tidings", "relay", *args, cwd=tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"pip install 'tidings[{extra}]'" in output, output
    assert "Traceback" not in output, output
    assert "relay started" not in output.lower(), output


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        pytest.param(f"import tidings; tidings.connect({PG!r})", "postgres", id="connect"),
        pytest.param(
            f"from tidings.adapters.brokers import open_publisher; open_publisher({NATS!r})",
            "nats",
            id="publisher",
        ),
        pytest.param("import tidings.adapters.sqlalchemy", "sqlalchemy", id="sqlalchemy"),
    ],
)
def test_the_python_api_names_the_missing_extra(base: Path, code: str, extra: str) -> None:
    """From Python the same: a ``ConfigurationError`` naming the extra to install."""
    done = run(base, "python", "-c", code)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tidings.errors.ConfigurationError:"), done.stderr
    assert f"pip install 'tidings[{extra}]'" in last


def test_the_demo_runs_to_its_end_on_the_base_install(base: Path, tmp_path: Path) -> None:
    """The personal-data part is skipped with one line saying what to install; every
    section after it runs."""
    done = run(base, "tidings", "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pip install 'tidings[crypto]'" in done.stdout
    assert "error:" not in done.stdout
    assert "orders.db and inventory.db" in done.stdout

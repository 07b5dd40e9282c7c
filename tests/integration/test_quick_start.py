"""The README's quick start on a fresh machine: ``make demo`` builds its own environment
from nothing and the demo runs in it.

The development environment has every extra installed, so a demo step that needs one the
``demo`` target does not install passes there and fails on a new machine; this test builds
the environment the way a new machine would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_make_demo_runs_in_an_environment_holding_only_what_it_installs(tmp_path: Path) -> None:
    """A new virtual environment, built by the ``demo`` target alone: the demo completes
    (its last section included) and says where its databases are."""
    make = shutil.which("make")
    assert make is not None, "the quick start needs make"
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    done = subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "orders.db and inventory.db" in done.stdout
    assert "error:" not in done.stdout

"""Running the ``tidings`` command in tests, as a user would."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tidings ARGS`` (with ``stdin`` as input) and capture what it says."""
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )

"""The README's tour runs as written."""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def test_the_tour_in_the_readme_runs_and_publishes_after_the_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Python block of the README places an order and prints the confirmation."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect("shop.db") as conn:  # the reader's own table, as the tour assumes
        conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, version INT)")
    tour = types.ModuleType("readme_tour")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, tour.__name__, tour)
    exec(compile(code.group(1), "README.md", "exec"), tour.__dict__)  # noqa: S102 - our README
    tour.store.close()
    printed = capsys.readouterr().out
    assert printed.startswith("confirm o-1 ")
    assert "OrderPlaced" in printed
    assert os.path.exists("shop.db")

"""docs/cqrs.md runs as written: pattern 1 (a view and its query handler), the
projection with its query handler, read-your-writes (the spec's three answers and the
consistency token) and pattern 2 (a projection fed by a broker, and another service's
token), each printing what the page says it prints."""

from __future__ import annotations

import itertools
import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "cqrs.md"


def runnable_blocks() -> list[str]:
    """The page's Python blocks that open a store of their own."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if 'tidings.connect("sqlite:///' in b]
    assert len(found) == 4
    return found


@pytest.mark.parametrize(
    "index",
    [0, 1, 2, 3],
    ids=["pattern-1-view", "pattern-3-projection", "read-your-writes", "pattern-2-broker"],
)
def test_the_cqrs_page_runs_as_written_and_prints_what_it_says(
    index: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each block runs on a fresh SQLite file; every ``# ...`` line right after a print
    is a line the block prints."""
    code = runnable_blocks()[index]
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"cqrs_doc_{index}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    printed = capsys.readouterr().out.splitlines()
    lines = code.splitlines()
    expected = [
        after.removeprefix("# ")
        for before, after in itertools.pairwise(lines)
        if before.startswith("print(") and after.startswith("# ")
    ]
    assert expected
    for line in expected:
        assert line in printed
    if "store" in module.__dict__:  # the broker's block closes its two stores itself
        module.__dict__["store"].close()

"""The README's tour runs as written, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

README = Path(__file__).parents[2] / "README.md"
TOUR_URL = '"sqlite:///shop.db"'


def tour_code() -> str:
    """The first Python block of the README."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    assert TOUR_URL in code.group(1)
    return code.group(1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Where the tour runs: the README's own SQLite file, or a fresh PostgreSQL schema
    (first on the search path, so the tour's own table lands there too)."""
    monkeypatch.chdir(tmp_path)
    if request.param == "sqlite":
        yield TOUR_URL
        return
    pg_url: str = request.getfixturevalue("pg_url")
    schema = f"tour_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f'"{pg_url}?options={quote(f"-csearch_path={schema}")}", schema="{schema}"'
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_tour_in_the_readme_runs_and_publishes_after_the_commit(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tour, taken from the README as it stands (only its URL swapped for PostgreSQL),
    creates its table, places an order and prints the confirmation after the commit."""
    code = tour_code().replace(TOUR_URL, database_url)
    tour = types.ModuleType("readme_tour")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, tour.__name__, tour)
    exec(compile(code, "README.md", "exec"), tour.__dict__)  # noqa: S102 - our README
    try:
        printed = capsys.readouterr().out
        assert printed.startswith("confirm o-1 ")
        assert "OrderPlaced" in printed
        with tour.store.unit_of_work() as uow:
            row = uow.execute("SELECT id, status, version FROM orders").fetchall()
        assert [tuple(r) for r in row] == [("o-1", "PLACED", 1)]
    finally:
        tour.store.close()

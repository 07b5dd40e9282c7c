"""Your own statements in one parameter style, on every backend (memory included)."""

from __future__ import annotations

import pytest

import tidings

from ..conftest import MakeStore


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    """A store with a table of the application's own."""
    made = make_store(tidings.EventRegistry())
    with made.unit_of_work() as uow:
        uow.execute("DROP TABLE IF EXISTS ledger")  # PostgreSQL tests share public
        uow.execute("CREATE TABLE ledger (entry TEXT PRIMARY KEY, amount INTEGER, note TEXT)")
    return made


def rows(store: tidings.Store) -> list[tuple[object, ...]]:
    """The ledger, by entry."""
    with store.unit_of_work() as uow:
        return [tuple(r) for r in uow.execute("SELECT * FROM ledger ORDER BY entry").fetchall()]


def test_named_and_question_mark_parameters_run_on_every_backend(store: tidings.Store) -> None:
    """The same statements, written once, with a % and a :: look-alike in the data."""
    with store.unit_of_work() as uow:
        uow.execute(
            "INSERT INTO ledger VALUES (:entry, :amount, :note)",
            {"entry": "a", "amount": 5, "note": "50% off at 10:30"},
        )
        uow.execute("INSERT INTO ledger VALUES (?, ?, ?)", ("b", 7, "x::y"))
        found = uow.execute(
            "SELECT amount FROM ledger WHERE note LIKE '50%' AND entry = :e", {"e": "a"}
        )
        assert found.fetchone()[0] == 5
    assert rows(store) == [("a", 5, "50% off at 10:30"), ("b", 7, "x::y")]


def test_your_statements_roll_back_with_the_unit_of_work(store: tidings.Store) -> None:
    """An exception in the block undoes your rows too, on every backend."""
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.execute("INSERT INTO ledger VALUES (:e, 1, '')", {"e": "gone"})
        raise RuntimeError("the command failed")
    assert rows(store) == []


def test_a_savepoint_undoes_only_its_own_statements(store: tidings.Store) -> None:
    """A failing savepoint (as an inbox handler's) keeps the statements before it."""
    with store.unit_of_work() as uow:
        uow.execute("INSERT INTO ledger VALUES ('kept', 1, '')")
        with pytest.raises(RuntimeError), uow.transaction.savepoint():
            uow.execute("INSERT INTO ledger VALUES ('undone', 2, '')")
            raise RuntimeError("this handler failed")
        uow.execute("INSERT INTO ledger VALUES ('after', 3, '')")
    assert [r[0] for r in rows(store)] == ["after", "kept"]

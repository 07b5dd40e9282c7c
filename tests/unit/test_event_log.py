"""iter_log: the global log as one iteration over read_all pages; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidings.application.event_log import iter_log
from tidings.records import EventRecord

WHEN = datetime(2025, 1, 15, tzinfo=UTC)


def record(position: int) -> EventRecord:
    """A record at ``position`` of a one-event stream."""
    return EventRecord(
        f"e-{position}", f"s-{position}", 1, "Counted", 1, WHEN, b"{}", position=position
    )


class ScriptedLog:
    """A store whose read_all answers from a script: one page per call, then nothing."""

    def __init__(self, *pages: list[int]) -> None:
        self.pages = list(pages)
        self.calls: list[tuple[int, int]] = []

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """The next scripted page (positions become records)."""
        self.calls.append((after_position, limit))
        return [record(p) for p in self.pages.pop(0)] if self.pages else []


def test_pages_are_read_from_the_last_position_until_the_log_is_done() -> None:
    """Each read starts after the previous page's last record; the page size is passed on."""
    log = ScriptedLog([1, 2], [3, 4], [5])
    assert [r.position for r in iter_log(log, page=2)] == [1, 2, 3, 4, 5]  # type: ignore[arg-type]
    assert log.calls[:4] == [(0, 2), (2, 2), (4, 2), (5, 2)]


def test_an_empty_page_is_asked_for_once_more_before_the_iteration_ends() -> None:
    """A PostgreSQL store meeting a gap first answers nothing; the second read passes it."""
    log = ScriptedLog([1], [], [3])
    assert [r.position for r in iter_log(log)] == [1, 3]  # type: ignore[arg-type]
    assert [after for after, _ in log.calls] == [0, 1, 1, 3, 3]
    assert [r.position for r in iter_log(ScriptedLog([], [7]), 6)] == [7]  # type: ignore[arg-type]


def test_two_empty_pages_in_a_row_end_the_iteration() -> None:
    """A gap that may still fill stops the reader at the records before it."""
    log = ScriptedLog([1], [], [], [3])
    assert [r.position for r in iter_log(log)] == [1]  # type: ignore[arg-type]


def test_a_page_size_below_one_is_refused() -> None:
    """page=0 would never move forward."""
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_log(ScriptedLog(), page=0))  # type: ignore[arg-type]

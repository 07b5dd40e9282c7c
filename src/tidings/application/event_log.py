"""Reading the global event log as one iteration, a page at a time, in flat memory."""

from __future__ import annotations

from collections.abc import Iterator

from tidings.ports import EventStore
from tidings.records import EventRecord


def iter_log(
    events: EventStore, after_position: int = 0, page: int = 1000
) -> Iterator[EventRecord]:
    """Every record committed after ``after_position``, in position order.

    Built on ``read_all``: only one page is held at a time, however long the log. The
    iteration ends when the log has nothing more to give *now*; remember the position of
    the last record and start there next time. An empty page is asked for once more
    before ending: a PostgreSQL store may stop at a gap in positions whose writer had not
    yet ended, and a second look may find it decided.
    """
    if page < 1:
        raise ValueError(f"page must be at least 1 (got {page})")
    position, asked_again = after_position, False
    while True:
        records = events.read_all(position, page)
        if not records:
            if asked_again:
                return
            asked_again = True
            continue
        asked_again = False
        yield from records
        position = records[-1].position

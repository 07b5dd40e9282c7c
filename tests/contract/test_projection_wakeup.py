"""A live runner is woken by the commit of a new event, with or without the outbox: it
applies the event long before its poll interval is up (NOTIFY on PostgreSQL, the
database's data_version on SQLite, the log's length in memory)."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection
from tidings.testing.contract import Counted, Counter

POLL = 60.0  # the runner's fallback; the event must come well before it
WITHIN = 20.0


def _blocked_in_wait(thread: threading.Thread) -> bool:
    """The runner's thread is blocked inside its commit signal's wait (listening, on
    PostgreSQL; its last look at the database taken, elsewhere)."""
    frame = sys._current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    if "wait_for_work" not in names:
        return False
    inner = names[: names.index("wait_for_work")]
    return "wait" in inner or "notifies" in inner


@pytest.mark.parametrize("outbox", [False, True], ids=["no-outbox", "outbox"])
def test_a_live_runner_applies_a_new_event_before_its_poll_interval(
    make_store: MakeStore, outbox: bool
) -> None:
    """The runner polls every 60 s and beats every 60 s, so only the commit's signal
    can wake it: the event committed while it waits is applied within 20 s."""
    store = make_store(tidings.EventRegistry([Counted]), outbox=outbox)
    table = f"woken_{uuid.uuid4().hex[:8]}"

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(f"INSERT INTO {table} (step) VALUES (:s)", {"s": e.step})

    projection = Projection(
        "woken",
        {Counted: counted},
        schema=[f"CREATE TABLE IF NOT EXISTS {table} (step INTEGER)"],
    )
    runner = store.projections([projection], poll=POLL, heartbeat=POLL)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WITHIN
        while not _blocked_in_wait(thread):
            assert time.monotonic() < deadline, "the runner never waited for a commit"
            time.sleep(0.01)
        counter = Counter(f"c-{uuid.uuid4().hex[:8]}")
        counter.increment(7)
        with store.unit_of_work() as uow:
            uow.track(counter)
        assert store.wait_for(uow.position, "woken", timeout=WITHIN) == uow.position
        with store.unit_of_work() as uow:
            assert uow.execute(f"SELECT step FROM {table}").fetchall() == [(7,)]
    finally:
        stop.set()
        closing = Counter(f"c-{uuid.uuid4().hex[:8]}")
        closing.increment(0)
        with store.unit_of_work() as uow:  # a commit wakes it, to see the stop
            uow.track(closing)
        thread.join(timeout=POLL + 5)
        runner.close()

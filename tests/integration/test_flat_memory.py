"""Long streams and logs are read a page at a time: memory stays flat, measured with tracemalloc.

The default runs use 30,000 events on SQLite; the ``slow`` ones load a 100,000-event
stream and read a 1,000,000-event log (``pytest -m slow``).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tidings
from tidings.application.event_log import iter_log
from tidings.testing.contract import Counted, Named
from tidings.testing.tally import Tally

MB = 1024 * 1024


def peak_bytes(work: Callable[[], object]) -> int:
    """The highest memory tracemalloc saw allocated while ``work`` ran."""
    gc.collect()
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def drain(items: Iterator[object]) -> int:
    """Consume an iterator, keeping nothing; return how many items it gave."""
    return sum(1 for _ in items)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tidings.Store]:
    """An SQLite store with synchronous=NORMAL: the tests measure reads, not fsyncs."""
    with tidings.connect(
        f"sqlite:///{tmp_path / 'long.db'}",
        registry=tidings.EventRegistry([Counted, Named]),
        synchronous="NORMAL",
    ) as opened:
        yield opened


def fill(store: tidings.Store, stream: str, count: int, batch: int = 5_000) -> None:
    """Append ``count`` Counted events to ``stream``, ``batch`` per unit of work."""
    tally = Tally(stream)
    for done in range(0, count, batch):
        for _ in range(min(batch, count - done)):
            tally.add(1)
        with store.unit_of_work() as uow:
            uow.track(tally)


def test_reading_a_30000_event_stream_holds_one_page_not_the_stream(
    store: tidings.Store,
) -> None:
    """Streaming the records peaks at a small fraction of holding them all, and under 4 MB."""
    fill(store, "long", 30_000)
    streamed = peak_bytes(lambda: drain(store.events.read_stream("long")))
    held = peak_bytes(lambda: list(store.events.read_stream("long")))
    assert drain(store.events.read_stream("long")) == 30_000
    assert streamed < held / 5, (streamed, held)
    assert streamed < 4 * MB, streamed


def test_loading_a_30000_event_aggregate_keeps_memory_flat(store: tidings.Store) -> None:
    """The repository replays decoded events one by one: the peak is pages, not the stream."""
    fill(store, "long", 30_000)
    tallies = store.repository(Tally)
    loaded: list[Tally] = []
    streamed = peak_bytes(lambda: loaded.append(tallies.get("long")))
    held = peak_bytes(lambda: list(store.read_stream("long")))
    assert (loaded[0].total, loaded[0].version) == (30_000, 30_000)
    assert streamed < held / 5, (streamed, held)


def test_iterating_a_30000_event_log_keeps_memory_flat(store: tidings.Store) -> None:
    """``iter_log`` and ``Store.iter_all`` hold one page of the global log at a time."""
    for n in range(3):
        fill(store, f"stream-{n}", 10_000)
    records = peak_bytes(lambda: drain(iter_log(store.events)))
    events = peak_bytes(lambda: drain(store.iter_all()))
    held = peak_bytes(lambda: store.events.read_all(0, 30_000))
    assert drain(store.iter_all()) == 30_000
    assert records < held / 5, (records, held)
    assert events < held / 5, (events, held)


@pytest.mark.slow
def test_a_100000_event_stream_and_a_1000000_event_log_keep_memory_flat(
    store: tidings.Store,
) -> None:
    """The issue's sizes: both reads peak under 4 MB."""
    fill(store, "hot", 100_000)
    for n in range(9):
        fill(store, f"bulk-{n}", 100_000, batch=20_000)
    tallies = store.repository(Tally)
    stream_peak = peak_bytes(lambda: tallies.get("hot"))
    log_peak = peak_bytes(lambda: drain(store.iter_all()))
    assert drain(iter_log(store.events)) == 1_000_000
    assert stream_peak < 4 * MB, stream_peak
    assert log_peak < 4 * MB, log_peak

"""UUID7Source and utc_now: the id source and the clock the domain gets by default."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from tidings.domain.ids import UUID7Source, utc_now, uuid7

THREADS = 4
IDS_PER_THREAD = 5_000


def test_ids_are_uuids_of_version_7_with_the_rfc_variant() -> None:
    """Every id parses as a UUID whose version is 7 and whose variant is RFC 4122/9562."""
    source = UUID7Source()
    for _ in range(200):
        text = source()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_made_in_a_row_strictly_increase_as_strings_and_never_repeat() -> None:
    """Twenty thousand ids made one after another sort in the order they were made."""
    source = UUID7Source()
    ids = [source() for _ in range(20_000)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)


def test_ids_made_by_four_threads_at_once_are_all_unique() -> None:
    """Threads sharing one source get distinct ids, each thread's own ids still in order."""
    source = UUID7Source()
    start = threading.Barrier(THREADS)
    made: list[list[str]] = [[] for _ in range(THREADS)]

    def make(out: list[str]) -> None:
        start.wait()
        out.extend(source() for _ in range(IDS_PER_THREAD))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [text for out in made for text in out]
    assert len(everything) == THREADS * IDS_PER_THREAD
    assert len(set(everything)) == len(everything)
    for out in made:
        assert all(earlier < later for earlier, later in itertools.pairwise(out))


def test_an_id_carries_the_millisecond_it_was_made_in() -> None:
    """The first 48 bits of a fresh source's id are the Unix time in milliseconds."""
    source = UUID7Source()
    before_ms = time.time_ns() // 1_000_000
    made = uuid.UUID(source())
    after_ms = time.time_ns() // 1_000_000
    assert before_ms <= made.int >> 80 <= after_ms


def test_ids_made_while_the_clock_stands_still_keep_increasing_past_the_counter() -> None:
    """With the clock stuck on one millisecond, 10,000 ids (more than the 12-bit counter
    holds) still strictly increase: the millisecond is borrowed forward, a few at most."""
    stuck_ms = 1_700_000_000_000
    source = UUID7Source(time_ns=lambda: stuck_ms * 1_000_000)
    ids = [source() for _ in range(10_000)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    first_ms, last_ms = uuid.UUID(ids[0]).int >> 80, uuid.UUID(ids[-1]).int >> 80
    assert first_ms == stuck_ms
    assert stuck_ms + 2 <= last_ms <= stuck_ms + 3
    assert all(uuid.UUID(text).version == 7 for text in ids[::97])


def test_the_shared_default_source_makes_version_7_ids() -> None:
    """``uuid7`` is a UUID7Source whose ids are version 7 UUIDs that keep increasing."""
    assert isinstance(uuid7, UUID7Source)
    first, second = uuid7(), uuid7()
    assert uuid.UUID(first).version == 7
    assert first < second


def test_utc_now_is_timezone_aware_utc() -> None:
    """utc_now returns an aware datetime with a zero UTC offset, close to the real time."""
    now = utc_now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)


def test_a_forked_child_does_not_reuse_the_random_bits_its_parent_drew() -> None:
    """Both processes make an id right after the fork: their random tails differ, because
    the child drops the pool of random bytes it inherited."""
    import os

    uuid7()  # the parent has a pool now
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process reports through the pipe
        os.write(writing, uuid7().encode())
        os._exit(0)
    os.close(writing)
    parents = uuid7()
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        childs = pipe.read()
    assert len(childs) == 36
    assert childs[-12:] != parents[-12:]

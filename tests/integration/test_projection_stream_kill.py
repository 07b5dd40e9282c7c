"""A stream projection under fire: ``tidings consume`` of a projection SIGKILLed again and
again between its commit and its ack, over RabbitMQ and NATS. Every event is applied
once, each counter's in order."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import pytest

import tidings
from tests.contract import stream_kit
from tests.contract.stream_kit import SOURCE, read_model, relay_all, write
from tidings.adapters.brokers import open_publisher
from tidings.testing.contract import Counted, Counter

from .faults import PATIENCE, wait_until
from .test_consumer_faults import Feed, feed, in_schema, start_consumer

__all__ = ["feed"]  # the fixture, imported to be found here
HANDLERS = ("--handlers", "tests.integration.stream_projection:projection", "--batch", "20")
COUNTERS, STEPS, KILLS = 60, 10, 2


def applied(store: tidings.Store) -> int:
    """Events the projection has applied, by its checkpoint."""
    return sum(s.events for s in store.stream_status())


@pytest.mark.postgres
def test_a_stream_projection_killed_again_and_again_applies_each_event_once_in_order(
    pg_url: str, schema: str, feed: Feed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writes and relays 60 counters of 10 events; B's consumer is SIGKILLed twice, each
    right after committing a batch and before acking it (the batch comes again): every
    counter's total is exact, its versions applied 1 to 10 in order, and the checkpoint
    counts each event once and holds A's last position."""
    rng, log = random.Random(7), tmp_path / "consumer.log"
    # The consumer process builds the projection on the kit's default table (in this
    # test's own schema); an earlier test in this process may have renamed it here.
    monkeypatch.setattr(stream_kit, "TABLE", ["counter_totals"])
    a = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}",
        registry=tidings.EventRegistry([Counted]),
        outbox=True,
        source=SOURCE,
    )
    db = in_schema(pg_url, schema)
    b = tidings.connect(db, schema=schema)
    options = {"exchange": feed.topic} if feed.kind == "rabbitmq" else dict(feed.options)
    counters = [Counter(f"c-{n}") for n in range(COUNTERS)]
    last: list[str | None] = []

    def service_a() -> None:  # each counter's events in units of work of their own
        publisher = open_publisher(feed.url, **options)
        try:
            for step in range(1, STEPS + 1):
                for counter in counters:
                    last.append(write(a, counter, step))
                relay_all(a, publisher)
        finally:
            publisher.close()

    try:
        writer = threading.Thread(target=service_a)
        writer.start()
        writer.join(PATIENCE)
        for _ in range(KILLS):  # each life applies at most 50 + a batch of 20: 140 of 600
            monkeypatch.setenv("TIDINGS_TEST_DIE_AFTER", str(rng.randint(1, 50)))
            consumer = start_consumer(db, schema, feed, log, killed=True, extra=HANDLERS)
            assert consumer.wait(timeout=PATIENCE) == -signal.SIGKILL, log.read_text()
        monkeypatch.delenv("TIDINGS_TEST_DIE_AFTER")
        final = start_consumer(db, schema, feed, tmp_path / "final.log", extra=HANDLERS)
        total = COUNTERS * STEPS
        wait_until(lambda: applied(b) == total, "every event is applied", alive=[final])
        final.terminate()
        assert final.wait(timeout=PATIENCE) == 0
        expected = ",".join(str(v) for v in range(1, STEPS + 1))
        assert read_model(b) == {c.id: (sum(range(1, STEPS + 1)), expected) for c in counters}
        [status] = b.stream_status()
        token = last[-1]
        assert token is not None
        assert (status.source, status.events) == (SOURCE, total)
        assert b.wait_for(token, "counter-totals", timeout=5.0) == status.position
    finally:
        a.close()
        b.close()

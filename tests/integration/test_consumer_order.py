"""Per-aggregate order across consumer crashes, on real brokers: ``tidings consume`` is
SIGKILLed again and again while the events of a hundred aggregates flow, and a handler
records every version it sees. The messages a killed consumer had fetched come back only
later (NATS: after ``ack_wait``), while its successor already fetches later events."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from pathlib import Path

import pytest

import tidings
from tidings.ports import OutgoingMessage
from tidings.serialization.cloudevents import to_message
from tidings.serialization.codec import JsonCodec
from tidings.testing.contract import Counted, Counter, new_id

from .faults import PATIENCE, kill_mid_work, wait_until
from .test_consumer_faults import Feed, feed, in_schema, inbox_rows, start_consumer

__all__ = ["feed"]  # the broker fixture, parametrised over RabbitMQ and NATS

AGGREGATES = 100
VERSIONS = 50  # 5,000 events
HANDLERS = "tests.integration.ordered_handlers:handlers"


def interleaved_events(kills: int) -> list[list[OutgoingMessage]]:
    """The CloudEvents of every aggregate's versions, versions in order and aggregates
    interleaved, cut into one slice per kill round."""
    codec = JsonCodec(tidings.EventRegistry([Counted]))
    counters = [Counter(new_id("ordered")) for _ in range(AGGREGATES)]
    for counter in counters:
        for step in range(VERSIONS):
            counter.increment(step)
    streams = [[to_message(codec.encode(e), "counters") for e in c.pull_events()] for c in counters]
    flat = [stream[v] for v in range(VERSIONS) for stream in streams]
    size = len(flat) // kills + 1
    return [flat[i : i + size] for i in range(0, len(flat), size)]


def seen_versions(store: tidings.Store) -> dict[str, list[int]]:
    """Per aggregate, the versions the handler saw, in the order it saw them."""
    with store.unit_of_work() as uow:
        rows = uow.execute("SELECT aggregate_id, version FROM seen_versions ORDER BY n").fetchall()
    seen: dict[str, list[int]] = defaultdict(list)
    for aggregate, version in rows:
        seen[aggregate].append(version)
    return seen


@pytest.mark.postgres
@pytest.mark.parametrize(
    "kills",
    [pytest.param(2, id="2-kills"), pytest.param(15, id="15-kills", marks=pytest.mark.slow)],
)
def test_a_consumer_killed_again_and_again_hands_each_aggregates_events_over_in_order(
    pg_url: str, schema: str, feed: Feed, tmp_path: Path, kills: int
) -> None:
    """5,000 events of 100 aggregates while ``tidings consume`` is SIGKILLed ``kills``
    times at random moments: the handler saw every aggregate's versions 1 to 50 in order,
    each once. The suite runs 2 kills; ``-m slow`` runs 15."""
    rng, log = random.Random(kills), tmp_path / "consumer.log"
    db = in_schema(pg_url, schema)
    store = tidings.connect(db, schema=schema)
    try:
        with store.unit_of_work() as uow:
            uow.execute(
                "CREATE TABLE seen_versions (n BIGSERIAL PRIMARY KEY, aggregate_id TEXT NOT NULL, "
                "version INTEGER NOT NULL)"
            )
        options = ["--handlers", HANDLERS, "--batch", "100"]
        for chunk in interleaved_events(kills):
            publishing = threading.Thread(target=feed.publish, args=(chunk,))
            publishing.start()
            before = inbox_rows(store)
            consumer = start_consumer(db, schema, feed, log, killed=True, extra=options)
            kill_mid_work(
                consumer,
                lambda: inbox_rows(store),
                before,
                "the consumer applied a batch",
                rng=rng,
                most=0.3,
                log=log,
            )
            publishing.join()
        final = tmp_path / "final-consumer.log"
        last = start_consumer(db, schema, feed, final, extra=options)
        wait_until(
            lambda: inbox_rows(store) == AGGREGATES * VERSIONS,
            "every event is applied",
            alive=[last],
            log=final,
            timeout=PATIENCE * 2,
        )
        # The killed ones may have applied everything before the last one even began: stop
        # it only once its banner says its SIGTERM handler is in place (it comes after).
        wait_until(
            lambda: f"consumer {feed.name}:" in final.read_text(),
            "the last consumer is up",
            alive=[last],
            log=final,
        )
        last.terminate()
        assert last.wait(timeout=PATIENCE) == 0, final.read_text()
        seen = seen_versions(store)
        out_of_order = {
            aggregate: versions
            for aggregate, versions in seen.items()
            if versions != list(range(1, VERSIONS + 1))
        }
        assert len(seen) == AGGREGATES
        first = dict(list(out_of_order.items())[:3])
        assert not out_of_order, f"{len(out_of_order)} aggregates out of order, e.g. {first}"
        assert store.inbox is not None
        assert store.inbox.dead_letters() == []
    finally:
        store.close()

"""Outbox relay throughput and latency beside the raw limits, measured in one run.

    make bench-relay                      # or: .venv/bin/python benchmarks/relay.py
    .venv/bin/python benchmarks/relay.py --events 100000 --runs 3 --latency-seconds 5

1. Throughput: a backlog of ``--events`` outbox rows (default 100,000) drained by one
   ``Relay`` (default options: 8 lanes, its default batch) driven pass after pass with
   ``drain``, from PostgreSQL and from SQLite to NATS JetStream and to RabbitMQ (with
   publisher confirms, into a bound quorum queue). Two backlog shapes: spread over many
   aggregates (5 events each, interleaved), and many events of a few aggregates (10): the
   relay keeps one message per aggregate in flight, so the second shape goes out at one
   broker round trip per wave (docs/outbox.md). The backlog is written with the outbox
   adapter's own ``write`` (the unit of work's path) in transactions of 5,000 rows.
2. Latency from commit to broker acknowledgement at a steady 1,000 events/s
   (``relay_latency.py`` explains the method), and from PostgreSQL its floor: a
   hand-written relay (``raw_relay.py``: LISTEN, a plain SELECT, publish -> ack on one
   asyncio loop) run just after it with the same writer and measured the same way.
3. The raw limits in the same run: claiming 100 rows at a time with ``FOR UPDATE SKIP
   LOCKED`` (one and two workers), NATS JetStream publish with async acks (nats-py),
   RabbitMQ publish with confirms (aio-pika, 1,000 in flight), both in waves of ``--few``
   messages each acknowledged before the next wave (the ceiling of the few-aggregate
   backlog for a relay that keeps each aggregate's order by waiting), LISTEN/NOTIFY wake-up, and
   the round trip of one message at a time from publish to the broker's ack (nats-py,
   pika), idle and beside the latency runs' steady writer (the writer's commits share the
   disk and cores with the broker).

Every configuration runs ``--runs`` times; tables show the median, with every run's
figure and the machine's load. Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import raw_brokers
import raw_limits
import raw_relay
import relay_latency
import servers
from report import Series, load, per_second, percentile, rate, table, verdict

import tidings
from tidings.adapters.nats import NatsPublisher
from tidings.adapters.rabbitmq import RabbitPublisher
from tidings.ports import OutgoingMessage, Transport
from tidings.records import EventRecord

TARGETS = {"postgresql -> nats": 25_000.0, "postgresql -> rabbitmq": 7_000.0}
FILL_CHUNK = 5_000
ROUND_TRIPS = 1_000  # single publishes timed for the raw publish -> ack latency
CLAIM_ROWS = 10  # due rows while the claim read of the latency floor is timed
FLOOR_TARGET = 1.5  # commit -> ack p50 over the hand-written relay's (raw_relay.py)


@dataclass(frozen=True)
class Setup:
    """Where one run writes: the database URLs and the broker places."""

    pg_url: str
    pg_schema: str
    sqlite_url: str
    nats: servers.NatsPlace
    rabbit: servers.RabbitPlace

    def url(self, db: str) -> str:
        """The URL of ``postgresql`` or ``sqlite``."""
        return self.pg_url if db == "postgresql" else self.sqlite_url


def backlog(events: int, aggregates: int) -> list[EventRecord]:
    """``events`` OrderPlaced records over ``aggregates`` aggregates, interleaved."""
    now = datetime.now(UTC)
    data = json.dumps(
        {
            "customer_id": "alice@example.com",
            "total_cents": 3900,
            "lines": [{"sku": "sku-7", "quantity": 1, "unit_price_cents": 3900}],
        }
    ).encode()
    return [
        EventRecord(
            event_id=str(uuid.uuid4()),
            stream_id=f"order-{i % aggregates}",
            version=i // aggregates + 1,
            event_type="OrderPlaced",
            schema_version=1,
            occurred_at=now,
            data=data,
        )
        for i in range(events)
    ]


def fill(store: tidings.Store, records: list[EventRecord]) -> None:
    """Write the backlog into an emptied outbox, then let the planner see its size."""
    outbox, db = store.outbox, store.database
    assert outbox is not None
    table_name = db.tables["outbox"]  # type: ignore[attr-defined]
    with db.transaction() as tx:
        tx.execute(f"DELETE FROM {table_name}")
    for start in range(0, len(records), FILL_CHUNK):
        with db.transaction() as tx:
            outbox.write(tx, records[start : start + FILL_CHUNK])
    if db.dialect == "postgresql":
        with psycopg.connect(store.database.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"ANALYZE {table_name}")


def drain(store: tidings.Store, transport: Transport, events: int) -> float:
    """Events/s of one relay publishing the whole backlog (``Relay.drain``: passes as
    ``run`` makes them, each claiming while the last settles, until all is settled)."""
    relay = store.relay(transport)
    start = time.perf_counter()
    relay.drain()
    elapsed = time.perf_counter() - start
    relay.release()
    assert relay.stats.published == events, f"published {relay.stats.published} of {events}"
    return events / elapsed


@contextmanager
def transport_to(broker: str, setup: Setup) -> Iterator[Transport]:
    """The tidings publisher to the run's stream or exchange."""
    transport: Transport
    if broker == "nats":
        transport = NatsPublisher(
            servers.NATS, stream=setup.nats.stream, subject_prefix=setup.nats.prefix
        )
    else:
        transport = RabbitPublisher(servers.AMQP, exchange=setup.rabbit.exchange)
    try:
        yield transport
    finally:
        transport.close()
        if broker == "rabbitmq":
            servers.purge_queue(setup.rabbit.queues[0])


def measure_throughput(
    setup: Setup, events: int, runs: int, few: int
) -> list[tuple[str, str, Series]]:
    """Median events/s per (database, broker, shape)."""
    shapes = {"spread": (events, max(events // 5, 1)), f"{few} aggregates": (events, few)}
    found = []
    for db in ("postgresql", "sqlite"):
        store = relay_latency.open_store(setup.url(db), setup.pg_schema)
        try:
            for shape, (count, aggregates) in shapes.items():
                for broker in ("nats", "rabbitmq"):
                    series = Series(f"{db} -> {broker}")
                    with transport_to(broker, setup) as transport:
                        for _ in range(runs):
                            fill(store, backlog(count, aggregates))
                            series.add(drain(store, transport, count))
                    print(f"  {series.name}, {shape}: {series.spread()} events/s ({load()})")
                    found.append((series.name, shape, series))
        finally:
            store.close()
    return found


@dataclass
class Latency:
    """One latency configuration: the relay's p50 and p99 and, from PostgreSQL, those of
    the hand-written relay (``raw_relay``) run just after it, with the same writer."""

    name: str
    writer: str
    p50: Series = field(default_factory=lambda: Series(""))
    p99: Series = field(default_factory=lambda: Series(""))
    floor50: Series = field(default_factory=lambda: Series(""))
    floor99: Series = field(default_factory=lambda: Series(""))
    rates: list[float] = field(default_factory=list)  # events/s the writer reached


def measure_latency(setup: Setup, seconds: float, runs: int) -> list[Latency]:
    """p50 and p99 seconds per (database, broker, writer), the relay's and the floor's.

    Steady state, apart from what the throughput runs left: each run writes to a fresh
    PostgreSQL schema or SQLite file, after a CHECKPOINT (the drains above leave hundreds of
    thousands of rows' worth of dirty pages, whose flushing stalled commits for hundreds of
    milliseconds in the first measurements), and the first second of events is relayed but
    not counted (connections and caches warming up). From PostgreSQL each run of the relay
    is followed by a run of the hand-written relay, so the machine's load, which moves
    from minute to minute, weighs on both alike.
    """
    configs = [
        ("postgresql", "nats", "process"),
        ("postgresql", "rabbitmq", "process"),
        ("postgresql", "nats", "thread"),
        ("sqlite", "nats", "thread"),
        ("sqlite", "rabbitmq", "thread"),
    ]
    found = []
    for db, broker, writer in configs:
        found.append(result := Latency(f"{db} -> {broker}", writer))
        relays = ["tidings", "raw"] if db == "postgresql" else ["tidings"]
        for _ in range(runs):
            for kind in relays:
                latencies, reached = one_latency_run(setup, (db, broker, writer), kind, seconds)
                tidings_ = kind == "tidings"
                p50 = result.p50 if tidings_ else result.floor50
                p99 = result.p99 if tidings_ else result.floor99
                p50.add(percentile(latencies, 50))
                p99.add(percentile(latencies, 99))
                result.rates.append(reached)
        floor = (
            f"; hand-written relay p50 {result.floor50.median * 1e3:.2f} ms, "
            f"p99 {result.floor99.median * 1e3:.2f} ms"
            if result.floor50.values
            else ""
        )
        print(
            f"  {result.name}, writer {writer}: p50 {result.p50.median * 1e3:.2f} ms, "
            f"p99 {result.p99.median * 1e3:.2f} ms{floor}; writer reached "
            f"{min(result.rates):,.0f}-{max(result.rates):,.0f} events/s ({load()})"
        )
    return found


def each_run(result: Latency) -> str:
    """The relay's p50 over the floor's, run by run (each pair ran one after the other)."""
    pairs = zip(result.p50.values, result.floor50.values, strict=True)
    return " / ".join(f"{p / f:.1f}" for p, f in pairs)


def one_latency_run(
    setup: Setup, config: tuple[str, str, str], kind: str, seconds: float
) -> tuple[list[float], float]:
    """One run of the relay (``kind`` tidings) or of the hand-written one (raw), for a
    (database, broker, writer) configuration."""
    db, broker, writer = config
    with ExitStack() as places:
        schema = places.enter_context(servers.pg_schema())
        sqlite_url = places.enter_context(servers.sqlite_file())
        with psycopg.connect(setup.pg_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        transport = places.enter_context(transport_to(broker, setup))

        def relay(store: tidings.Store) -> relay_latency.Relaying:
            if kind == "tidings":
                return relay_latency.TidingsRelay(store, transport)
            place = setup.nats.prefix if broker == "nats" else setup.rabbit.exchange
            raw = raw_relay.RawRelay(
                setup.pg_url,
                store.database.tables["outbox"],  # type: ignore[attr-defined]
                store.outbox.channel,  # type: ignore[union-attr]
                broker,
                place,
            )
            raw.start()
            return raw

        return relay_latency.measure(
            setup.pg_url if db == "postgresql" else sqlite_url,
            schema,
            relay,
            per_second=1_000,
            seconds=seconds,
            writer=writer,
            warmup=1.0,
        )


def round_trips(setup: Setup, broker: str, batch: list[OutgoingMessage], into: list[float]) -> None:
    """Raw one-at-a-time publish -> ack round trips to ``broker`` at 1,000 a second, into
    ``into``, after the first second (the latency runs leave out the writer's first)."""
    time.sleep(1.0)
    if broker == "nats":
        into += raw_brokers.nats_round_trips(setup.nats.prefix, batch, 1_000)
    else:
        into += raw_brokers.pika_round_trips(setup.rabbit.exchange, batch, 1_000)


def measure_floor(setup: Setup, seconds: float, runs: int) -> dict[str, tuple[Series, Series]]:
    """Per broker, p50 and p99 seconds of the raw client's publish -> ack round trip, one
    message at a time, while the same steady writer as in the latency runs commits 1,000
    events/s to PostgreSQL (no relay): the broker's part of the floor, on a machine whose
    disk and cores the writer shares with the broker."""
    count = int(1_000 * (seconds + 1.0))
    sent = int(1_000 * seconds)  # the publisher starts a second after the writer
    found = {}
    for broker in ("nats", "rabbitmq"):
        p50, p99 = Series(broker), Series("")
        for _ in range(runs):
            taken: list[float] = []
            with servers.pg_schema() as schema:
                batch = raw_brokers.messages(sent)
                publisher = threading.Thread(target=round_trips, args=(setup, broker, batch, taken))
                publisher.start()
                relay_latency.write_in_process(setup.pg_url, schema, 1_000, count)
                publisher.join()
            p50.add(percentile(taken, 50))
            p99.add(percentile(taken, 99))
        if broker == "rabbitmq":
            servers.purge_queue(setup.rabbit.queues[0])
        print(
            f"  raw {broker} publish -> ack beside the writer: p50 {p50.median * 1e3:.2f} ms, "
            f"p99 {p99.median * 1e3:.2f} ms ({load()})"
        )
        found[broker] = (p50, p99)
    return found


def measure_raw(setup: Setup, events: int, runs: int, few: int) -> dict[str, Series]:
    """The raw limits, each the median of ``runs``."""
    raw = {
        name: Series(name)
        for name in (
            *("claim x1", "claim x2", "nats publish", "rabbitmq publish", "pika publish"),
            *("nats waves", "pika waves"),
            "notify",
            "claim one",
            *(f"{broker} ack p{p}" for broker in ("nats", "rabbitmq") for p in (50, 99)),
        )
    }
    store = relay_latency.open_store(setup.pg_url, setup.pg_schema)
    outbox_table = store.database.tables["outbox"]  # type: ignore[attr-defined]
    try:
        for _ in range(runs):
            for workers in (1, 2):
                fill(store, backlog(events, max(events // 5, 1)))
                claimed = raw_limits.claim_rate(setup.pg_url, outbox_table, events, workers)
                raw[f"claim x{workers}"].add(claimed)
            with psycopg.connect(setup.pg_url, autocommit=True) as conn:
                # The claims above left their rows, and dead ones that a read would step over.
                conn.execute(f"DELETE FROM {outbox_table}")
                conn.execute(f"VACUUM {outbox_table}")
            fill(store, backlog(CLAIM_ROWS, CLAIM_ROWS))
            raw["claim one"].add(raw_limits.claim_latency(setup.pg_url, outbox_table))
            with store.database.transaction() as tx:  # the next run's claims start empty
                tx.execute(f"DELETE FROM {outbox_table}")
            raw["notify"].add(1e6 * raw_limits.notify_wakeup(setup.pg_url, servers.unique("bench")))
            to_nats = raw_brokers.messages(min(events, 50_000))
            publish = functools.partial(raw_brokers.raw_nats_publish, setup.nats.prefix, to_nats)
            raw["nats publish"].add(rate(len(to_nats), functools.partial(publish, False)))
            to_rabbit = raw_brokers.messages(min(events, 20_000))
            publish = functools.partial(
                raw_brokers.raw_aio_pika_publish, setup.rabbit.exchange, to_rabbit
            )
            raw["rabbitmq publish"].add(rate(len(to_rabbit), publish))
            to_rabbit = raw_brokers.messages(min(events, 20_000))
            publish = functools.partial(
                raw_brokers.raw_pika_pipelined, setup.rabbit.exchange, to_rabbit
            )
            raw["pika publish"].add(rate(len(to_rabbit), publish))
            # One message per aggregate in flight, for ``few`` aggregates: the ceiling of
            # the few-aggregate backlog for any relay that keeps their order by waiting.
            waves = raw_brokers.messages(min(events, 5_000))
            publish = functools.partial(raw_brokers.raw_nats_waves, setup.nats.prefix, waves, few)
            raw["nats waves"].add(rate(len(waves), publish))
            publish = functools.partial(
                raw_brokers.raw_pika_waves, setup.rabbit.exchange, waves, few
            )
            raw["pika waves"].add(rate(len(waves), publish))
            one_by_one = {
                "nats": raw_brokers.nats_round_trips(setup.nats.prefix, to_nats[:ROUND_TRIPS]),
                "rabbitmq": raw_brokers.pika_round_trips(
                    setup.rabbit.exchange, to_rabbit[:ROUND_TRIPS]
                ),
            }
            for broker, taken in one_by_one.items():
                for p in (50, 99):
                    raw[f"{broker} ack p{p}"].add(percentile(taken, p))
            servers.purge_queue(setup.rabbit.queues[0])
    finally:
        with store.database.transaction() as tx:
            tx.execute(f"DELETE FROM {outbox_table}")
        store.close()
    for series in raw.values():
        if " ack p" in series.name or series.name == "claim one":
            print(f"  raw {series.name}: {series.median * 1e3:.2f} ms ({load()})")
        else:
            print(f"  raw {series.name}: {series.spread()} ({load()})")
    return raw


def print_tables(
    raw: dict[str, Series],
    throughput: list[tuple[str, str, Series]],
    latency: list[Latency],
    floor: dict[str, tuple[Series, Series]],
) -> None:
    """The three tables of the README, with ratios and the targets."""
    claim = raw["claim x1"].median
    # Each relay beside the raw loop of the client it publishes with: nats-py, pika.
    publish = {"nats": raw["nats publish"].median, "rabbitmq": raw["pika publish"].median}
    waves = {"nats": raw["nats waves"].median, "rabbitmq": raw["pika waves"].median}
    rows = []
    for name, shape, series in throughput:
        db, broker = name.split(" -> ")
        limit = min(claim, publish[broker]) if db == "postgresql" else publish[broker]
        target = TARGETS.get(name) if shape == "spread" else None
        rows.append(
            [
                name,
                shape,
                per_second(series.median),
                f"{series.median / limit:.2f}",
                f"{series.median / publish[broker]:.2f}",
                f"{series.median / waves[broker]:.2f}" if shape != "spread" else "",
                f">= {target:,.0f}: {verdict(series.median >= target)}" if target else "",
            ]
        )
    print("\nRelay throughput, events/s (median of runs)\n")
    header = [
        *("path", "backlog", "events/s", "÷ tighter raw limit", "÷ raw publish"),
        *("÷ raw waves", "target"),
    ]
    print(table(header, rows))

    def ack(name: str, p: int) -> str:
        broker = name.split(" -> ")[1]
        if broker not in floor:
            return "-"
        return f"{floor[broker][p == 99].median * 1e3:.2f}"

    rows = []
    for result in latency:
        lowest = result.floor50.median
        over = result.p50.median / lowest
        known = not math.isnan(over)
        rows.append(
            [
                result.name,
                result.writer,
                f"{result.p50.median * 1e3:.2f}",
                f"{result.p99.median * 1e3:.2f}",
                f"{lowest * 1e3:.2f} / {result.floor99.median * 1e3:.2f}" if known else "-",
                f"{ack(result.name, 50)} / {ack(result.name, 99)}",
                each_run(result) if known else "-",
                f"{over:.2f}" if known else "-",
                verdict(over <= FLOOR_TARGET) if known else "-",
            ]
        )
    print("\nCommit -> broker ack at 1,000 events/s, ms (median of runs)\n")
    header = [
        "path",
        "writer",
        "p50",
        "p99",
        "floor p50 / p99 (hand-written relay)",
        "raw ack beside the writer",
        "p50 ÷ floor, each run",
        "p50 ÷ floor",
        f"p50 <= {FLOOR_TARGET}x floor",
    ]
    print(table(header, rows))
    rates = (  # (what, raw series, the figure issue 4 quoted)
        ("claim 100 rows, FOR UPDATE SKIP LOCKED, 1 worker", "claim x1", "70,000"),
        ("claim 100 rows, FOR UPDATE SKIP LOCKED, 2 workers", "claim x2", "89,000"),
        ("NATS JetStream publish, async acks (nats-py)", "nats publish", "65,000"),
        ("RabbitMQ publish, confirms, 1,000 in flight (aio-pika)", "rabbitmq publish", "10,000"),
        (
            "RabbitMQ publish, confirms, 1,000 in flight (pika SelectConnection)",
            "pika publish",
            "",
        ),
        (
            "NATS JetStream, waves of one message per aggregate, all acked before the next",
            "nats waves",
            "",
        ),
        (
            "RabbitMQ (pika), waves of one message per aggregate, all confirmed before the next",
            "pika waves",
            "",
        ),
    )
    rows = [
        *([what, per_second(raw[key].median), quoted] for what, key, quoted in rates),
        ["LISTEN/NOTIFY wake-up, median", f"{raw['notify'].median:.0f} µs", "71 µs"],
        [
            "read the due rows (the relay's claim), median",
            f"{raw['claim one'].median * 1e3:.2f} ms",
            "",
        ],
        *(
            [
                f"{label}, one message at a time, publish -> ack p50 / p99",
                f"{raw[f'{broker} ack p50'].median * 1e3:.2f} / "
                f"{raw[f'{broker} ack p99'].median * 1e3:.2f} ms",
                "",
            ]
            for broker, label in (
                ("nats", "NATS JetStream (nats-py)"),
                ("rabbitmq", "RabbitMQ (pika)"),
            )
        ),
    ]
    print("\nRaw limits (rows or messages/s; median of runs)\n")
    print(table(["raw limit", "this run", "issue 4"], rows))


def main() -> None:
    """Measure everything and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog size")
    parser.add_argument("--few", type=int, default=10, help="aggregates of the second shape")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["raw", "throughput", "latency"])
    args = parser.parse_args()
    print(f"tidings relay benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    with ExitStack() as stack:
        setup = Setup(
            servers.PG_URL,
            stack.enter_context(servers.pg_schema()),
            stack.enter_context(servers.sqlite_file()),
            stack.enter_context(servers.nats_stream()),
            stack.enter_context(servers.rabbit_exchange()),
        )
        raw = measure_raw(setup, args.events, args.runs, args.few) if "raw" not in args.skip else {}
        throughput = (
            measure_throughput(setup, args.events, args.runs, args.few)
            if "throughput" not in args.skip
            else []
        )
        latency = (
            measure_latency(setup, args.latency_seconds, args.runs)
            if "latency" not in args.skip
            else []
        )
        floor = (
            measure_floor(setup, args.latency_seconds, args.runs)
            if "latency" not in args.skip
            else {}
        )
    if raw:
        print_tables(raw, throughput, latency, floor)
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()

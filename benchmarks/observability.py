"""What observability costs: one scrape of the database gauges on a 1,000,000-row outbox,
and the relay's and the consumer's throughput with metrics on beside them off.

    make bench-observability            # or: .venv/bin/python benchmarks/observability.py
    .venv/bin/python benchmarks/observability.py --rows 1000000 --events 100000 --runs 3

1. Scrape: an outbox of ``--rows`` rows on PostgreSQL and on SQLite, in two shapes: all
   published but 1,000 (a healthy service keeping a day of published rows), and all
   waiting (a relay down for a long time: the worst case of the backlog count). One scrape
   is ``generate_latest`` of a registry holding the database collector (every gauge
   tidings reads from the database: outbox, inbox, sagas, projections, relays); its median
   over 15 scrapes is set beside the median round trip of ``SELECT 1`` in the same run.
2. Relay overhead: a backlog of ``--events`` rows drained to NATS JetStream by a relay
   without metrics and by one with its collector registered (the commit-to-ack
   histogram counted for every acked group), ``--runs`` times each, which goes first
   alternating from run to run; the ratio of the medians is the cost of the metrics.
3. Consumer overhead: ``consumer.py``'s consumer (NATS, the Inventory handler behind the
   inbox) over ``--messages`` messages, without and with its collector (each handler run
   timed), alternating, ``--runs`` times each.
4. The hooks alone: the CPU time per event of the relay's commit-to-ack count and of the
   consumer's handler timing, without I/O (less at the mercy of the load).

Not a test: nothing is asserted about time. Every figure is printed with the load.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import consumer as consumer_bench
import psycopg
import relay as relay_bench
import relay_latency
import servers
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from report import load, table

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue
from tidings.adapters.nats import NatsPublisher
from tidings.observability.metrics import HandlerTimes, RelayCollector, register
from tidings.ports import OutboxEntry, Transport

SCRAPES = 15


def median_seconds(work: Callable[[], object], times: int) -> float:
    """The median seconds of ``times`` calls of ``work``."""
    found = []
    for _ in range(times):
        start = time.perf_counter()
        work()
        found.append(time.perf_counter() - start)
    return statistics.median(found)


def fill_outbox(store: tidings.Store, rows: int, waiting: int) -> None:
    """An outbox of ``rows`` rows over 200,000 aggregates, the last ``waiting`` of them not
    yet published, written in one statement (a million through the outbox's own write
    path took minutes on this machine; the rows are the same to the queries measured)."""
    db = store.database
    outbox = db.tables["outbox"]  # type: ignore[attr-defined]
    postgres = db.dialect == "postgresql"
    now = "now()" if postgres else "strftime('%Y-%m-%dT%H:%M:%f+00:00')"
    series = (
        "generate_series(1, %s) AS n(i)"
        if postgres
        else "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " SELECT i FROM n)"
    )
    mark, modulo = ("%s", "%%") if postgres else ("?", "%")
    with db.transaction() as tx:
        tx.execute(f"DELETE FROM {outbox}")
        tx.execute(
            f"INSERT INTO {outbox} (event_id, event_type, aggregate_id, aggregate_version,"
            " schema_version, occurred_at, payload, shard, published, published_at)"
            f" SELECT 'e-' || i, 'OrderPlaced', 'order-' || (i {modulo} 200000), i / 200000 + 1, 1,"
            f" {now}, '{{\"total_cents\": 3900}}', i {modulo} 8, i <= {mark},"
            f" CASE WHEN i <= {mark} THEN {now} END FROM {series}",
            (rows - waiting, rows - waiting, rows),
        )
    if postgres:
        with psycopg.connect(db.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"VACUUM ANALYZE {outbox}")


def measure_scrape(setup: relay_bench.Setup, rows: int) -> list[list[str]]:
    """Per database and shape: the median scrape, the median SELECT 1, their ratio."""
    found = []
    for db in ("postgresql", "sqlite"):
        store = relay_latency.open_store(setup.url(db), setup.pg_schema)
        if db == "postgresql":
            store.database.response_timeout = None  # type: ignore[attr-defined]
        try:
            registry = CollectorRegistry()
            register(registry, store=store)
            for shape, waiting in (("1,000 waiting", 1_000), ("all waiting", rows)):
                start = time.perf_counter()
                fill_outbox(store, rows, waiting)
                print(f"  {db}: {rows:,} rows written in {time.perf_counter() - start:.0f} s")
                generate_latest(registry)  # warm: connections, the runner of projections
                scrape = median_seconds(functools.partial(generate_latest, registry), SCRAPES)
                ping = functools.partial(store.database.query, "SELECT 1")  # type: ignore[attr-defined]
                trip = median_seconds(ping, SCRAPES)
                row = [db, shape, f"{scrape * 1000:.1f} ms", f"{trip * 1e6:.0f} µs"]
                row.append(f"{scrape / trip:.0f}x")
                print(f"  {', '.join(row)} ({load()})")
                found.append([*row, load()])
        finally:
            store.close()
    return found


def timed(hook: Any, spent: list[float]) -> Any:
    """``hook`` with the seconds spent inside it added to ``spent[0]``: the direct measure
    of its cost, which the load of others blurs far less than a throughput ratio (the
    wrapper's own time counts too, so it errs on the high side)."""

    def call(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return hook(*args)
        finally:
            spent[0] += time.perf_counter() - start

    return call


def in_turn(
    run: int, off: list[float], on: list[float]
) -> tuple[tuple[bool, list[float]], tuple[bool, list[float]]]:
    """(metrics, where its figure goes), off first in even runs and on first in odd ones:
    whatever the second of a pair meets (a warmer cache, a busier broker) falls on both."""
    pair = ((False, off), (True, on))
    return pair if run % 2 == 0 else (pair[1], pair[0])


def measure_relay(setup: relay_bench.Setup, events: int, runs: int, broker: str) -> list[list[str]]:
    """Per database: events/s without and with metrics (medians), and the ratio. With
    ``broker`` "memory" the relay publishes to an in-process queue: no broker round trip
    in the figures, so the relay's own CPU time (where the hook runs) weighs most."""
    found = []
    for db in ("postgresql", "sqlite"):
        store = relay_latency.open_store(setup.url(db), setup.pg_schema)
        transport: Transport = (
            MemoryPublisher(MemoryQueue())
            if broker == "memory"
            else NatsPublisher(
                servers.NATS, stream=setup.nats.stream, subject_prefix=setup.nats.prefix
            )
        )
        off: list[float] = []
        on: list[float] = []
        cpu_off: list[float] = []  # events per CPU second of this process (all its threads):
        cpu_on: list[float] = []  # less at the mercy of the others' load than the wall clock
        shares: list[float] = []  # of the drain's time, spent inside the hook
        try:
            for run in range(runs):
                for metrics, series in in_turn(run, off, on):
                    relay_bench.fill(store, relay_bench.backlog(events, max(events // 5, 1)))
                    relay = store.relay(transport)
                    spent = [0.0]
                    if metrics:
                        register(CollectorRegistry(), relay=relay)
                        relay.on_acked = timed(relay.on_acked, spent)
                    start, cpu = time.perf_counter(), time.process_time()
                    relay.drain()
                    elapsed = time.perf_counter() - start
                    series.append(events / elapsed)
                    (cpu_on if metrics else cpu_off).append(events / (time.process_time() - cpu))
                    if metrics:
                        shares.append(spent[0] / elapsed)
                    relay.release()
                    assert relay.stats.published == events
                print(f"  {db}: off {off[-1]:,.0f}/s, on {on[-1]:,.0f}/s ({load()})")
        finally:
            transport.close()
            store.close()
        a, b = statistics.median(off), statistics.median(on)
        c, d = statistics.median(cpu_off), statistics.median(cpu_on)
        found.append(
            [
                db,
                f"{a:,.0f}",
                f"{b:,.0f}",
                f"{(a - b) / a:+.1%}",
                f"{(c - d) / c:+.1%}",
                f"{statistics.median(shares):.2%}",
                load(),
            ]
        )
    return found


def measure_consumer(count: int, runs: int) -> list[list[str]]:
    """Per database: messages/s of the benchmark consumer (``consumer.py``: NATS, the
    Inventory handler behind the inbox) without and with metrics (medians), the ratio."""
    found = []
    with servers.nats_stream() as place, servers.sqlite_file() as sqlite_url:
        setup = consumer_bench.Setup(servers.PG_URL, sqlite_url, place, None)  # type: ignore[arg-type]
        for db in ("postgresql", "sqlite"):
            off: list[float] = []
            on: list[float] = []
            shares: list[float] = []  # of the consumer's time, spent counting handler times
            with consumer_bench.open_store(setup, db) as store:
                for run in range(runs):
                    consumer_bench.fill_nats(place, consumer_bench.bodies(count))
                    for metrics, series in in_turn(run, off, on):
                        consumer_bench.reset(store)
                        subscription = consumer_bench.subscription_of("nats", setup, "")
                        consumer = store.consumer(subscription, consumer_bench.handlers(True))
                        spent = [0.0]
                        if metrics:
                            [collector] = register(CollectorRegistry(), consumer=consumer)
                            times = collector.handlers  # type: ignore[union-attr]
                            times.handled = timed(times.handled, spent)  # type: ignore[method-assign]
                        try:
                            start = time.perf_counter()
                            while consumer.stats.received < count:
                                consumer.run_once()
                            elapsed = time.perf_counter() - start
                            series.append(count / elapsed)
                            if metrics:
                                shares.append(spent[0] / elapsed)
                        finally:
                            subscription.close()
                    print(f"  {db}: off {off[-1]:,.0f}/s, on {on[-1]:,.0f}/s ({load()})")
            a, b = statistics.median(off), statistics.median(on)
            share = f"{statistics.median(shares):.2%}"
            found.append([db, f"{a:,.0f}", f"{b:,.0f}", f"{(a - b) / a:+.1%}", share, load()])
    return found


def measure_hooks() -> list[list[str]]:
    """CPU time the hot-path hooks add per event, alone (no I/O, so less at the mercy of
    the load than the relay runs): the relay's commit-to-ack count for an acked group of
    500, and the consumer's handler timing (``perf_counter`` twice and one count)."""
    relay = tidings.connect("memory://", outbox=True).relay(MemoryPublisher(MemoryQueue()))
    collector = RelayCollector(relay)
    entries = [OutboxEntry(r, 0, 0) for r in relay_bench.backlog(500, 100)]
    answers = [None] * len(entries)
    group = median_seconds(lambda: collector.acked(entries, answers), 200) / len(entries)
    times = HandlerTimes()

    def handler_run() -> None:
        began = time.perf_counter()
        times.handled("h", time.perf_counter() - began)

    run = median_seconds(lambda: [handler_run() for _ in range(500)], 200) / 500
    return [
        ["relay: commit-to-ack count, per event acked", f"{group * 1e9:.0f} ns", load()],
        ["consumer: handler timing, per handler run", f"{run * 1e9:.0f} ns", load()],
    ]


def main() -> None:
    """Measure both and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="outbox rows scraped")
    parser.add_argument("--events", type=int, default=100_000, help="relay backlog")
    parser.add_argument("--runs", type=int, default=3, help="relay runs per setting")
    parser.add_argument("--relay-broker", choices=["nats", "memory"], default="nats")
    parser.add_argument("--messages", type=int, default=20_000, help="consumer backlog")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["scrape", "relay", "consumer", "hooks"]
    )
    args = parser.parse_args()
    print(f"tidings observability benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    throughput = ["database", "metrics off", "metrics on", "cost", "load"]
    # Each table is printed as soon as it is measured: a later part that fails (a
    # server that stalls under the load of others) does not lose the earlier ones.
    if "hooks" not in args.skip:
        print("\nWhat the hooks add on the hot paths (CPU, median of 200 rounds)")
        print(table(["hook", "cost", "load"], measure_hooks()))
    with (
        servers.pg_schema() as schema,
        servers.sqlite_file() as sqlite_url,
        servers.nats_stream() as nats,
    ):
        setup = relay_bench.Setup(servers.PG_URL, schema, sqlite_url, nats, None)  # type: ignore[arg-type]
        if "relay" not in args.skip:
            rows = measure_relay(setup, args.events, args.runs, args.relay_broker)
            to = "NATS" if args.relay_broker == "nats" else "an in-memory queue"
            print(f"\nRelay to {to}, {args.events:,} events, median of {args.runs} runs")
            header = [*throughput[:4], "cost in CPU time", "time in the hook", "load"]
            print(table(header, rows))
        if "scrape" not in args.skip:
            rows = measure_scrape(setup, args.rows)
            print(f"\nOne scrape of the database gauges, outbox of {args.rows:,} rows")
            print(table(["database", "outbox", "scrape", "SELECT 1", "ratio", "load"], rows))
    if "consumer" not in args.skip:
        rows = measure_consumer(args.messages, args.runs)
        print(f"\nConsumer from NATS through the inbox, {args.messages:,} messages")
        print(table([*throughput[:4], "time in the hook", "load"], rows))
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()

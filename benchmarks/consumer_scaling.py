"""Consumer scaling: 1, 2 and 4 consumer processes on one NATS stream into PostgreSQL.

    .venv/bin/python benchmarks/consumer_scaling.py                    # 20,000 messages
    .venv/bin/python benchmarks/consumer_scaling.py --messages 20000 --runs 3 --processes 1 2 4

A backlog of ``--messages`` OrderPlaced CloudEvents (one aggregate each, as in
``consumer.py``, but each order of a product of its own: with the 100 products of
``consumer.py`` concurrent batches lock the same stock rows in different orders and
PostgreSQL breaks the deadlocks, which measures the handler, not the consumer) is taken
by N processes, each a ``store.consumer(...)`` with the inbox on
the same durable JetStream consumer (competing consumers: the stream's messages go to
whichever process asks first) and the same PostgreSQL database, pass after pass. The
clock runs from the moment every process is connected and ready until the inbox holds
every message; the table shows the whole rate, each process's share, and the rate over
one process's in the same run. On a machine with fewer cores than processes plus the
servers, the processes share the cores with PostgreSQL and NATS: read the ratio as what
this machine allows, not as what more cores would. Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event

import servers
from consumer import Setup, bodies, fill_nats, handlers, open_store, reset, subscription_of
from report import Series, load, per_second, table

DURABLE = "scaling"


def worker(
    setup: Setup, durable: str, ready: Barrier, stop: Event, applied: Synchronized[int]
) -> None:
    """One consumer process: connect, wait for the others, then pass after pass."""
    store = open_store(setup, "postgresql")
    subscription = subscription_of("nats", setup, "")
    subscription.durable = durable  # type: ignore[attr-defined]
    consumer = store.consumer(subscription, handlers(inbox=True), fetch_timeout=0.2)
    consumer.run_once()  # connects (the backlog is not there yet)
    ready.wait()
    while not stop.is_set():
        consumer.run_once()
        applied.value = consumer.stats.applied
    subscription.close()
    store.close()


def drain(setup: Setup, processes: int, count: int) -> tuple[float, list[int]]:
    """Messages/s of ``processes`` consumers draining ``count`` messages; each one's count."""
    with servers.nats_stream() as place:  # a stream of its own: only this drain's backlog
        return drain_from(replace(setup, nats=place), processes, count)


def drain_from(setup: Setup, processes: int, count: int) -> tuple[float, list[int]]:
    """``drain`` on the stream of ``setup``."""
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Barrier(processes + 1), spawn.Event()
    durable = servers.unique(DURABLE)
    counters = [spawn.Value("q", 0) for _ in range(processes)]
    workers = [
        spawn.Process(target=worker, args=(setup, durable, ready, stop, counter))
        for counter in counters
    ]
    for process in workers:
        process.start()
    try:
        ready.wait(timeout=60)
        fill_nats(setup.nats, bodies(count, products=count))
        start = time.perf_counter()
        while sum(c.value for c in counters) < count:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        for process in workers:
            process.join(timeout=30)
    return count / elapsed, [c.value for c in counters]


def main() -> None:
    """Measure every process count, runs interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"tidings consumer scaling, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    found = {n: Series(f"{n} processes") for n in args.processes}
    shares: dict[int, list[int]] = {}
    with ExitStack() as stack:
        setup = Setup(
            stack.enter_context(servers.pg_database()),
            stack.enter_context(servers.sqlite_file()),
            stack.enter_context(servers.nats_stream()),
            stack.enter_context(servers.rabbit_exchange(queues=1)),
        )
        with open_store(setup, "postgresql") as store:
            for run in range(args.runs):
                for n in args.processes:
                    reset(store)
                    rate, shares[n] = drain(setup, n, args.messages)
                    found[n].add(rate)
                    print(f"  run {run + 1}, {n} processes: {rate:,.0f}/s {shares[n]}, {load()}")
    one = found[args.processes[0]].median
    rows = [
        [
            str(n),
            per_second(series.median),
            series.spread(),
            f"{series.median / one:.2f}",
            " / ".join(f"{share / args.messages:.0%}" for share in shares[n]),
        ]
        for n, series in found.items()
    ]
    print("\nNATS -> PostgreSQL with the inbox, competing consumers (median of runs)\n")
    header = ["processes", "messages/s", "runs", "÷ 1 process", "share of each (last run)"]
    print(table(header, rows))
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()

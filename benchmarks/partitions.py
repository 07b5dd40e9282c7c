"""Partitioned consumers: how one stream's handling scales with consumer processes.

    make bench-partitions        # or: .venv/bin/python benchmarks/partitions.py --messages 20000

For 1, 2 and 3 processes of ``tidings consume --partitions 6`` (NATS JetStream into a
fresh PostgreSQL database each, the shop's Inventory handler behind the inbox): the
processes start on an empty stream and lease their shares; once every partition is
held by them, ``--messages`` OrderPlaced of as many orders are published into the six
partitions, and the time from the first publish until the last event is in the inbox
gives the rate. The baseline, in the same run: one ``tidings consume`` without
partitions, on the same events published unpartitioned. The table shows each rate and
its ratio to the baseline; ``--runs`` repeats each and shows the median. A two-core
machine caps the ratio near 2 whatever the design: each process is one interpreter, and
PostgreSQL and the broker share the same cores. Not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import servers
from report import Series, load, per_second, table

from tidings.adapters.nats import NatsPublisher
from tidings.application.partitions import partitioned
from tidings.examples.shop.inventory import STOCK_DDL
from tidings.examples.shop.orders import SHOP_EVENTS, Order
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord
from tidings.serialization.cloudevents import to_message
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry

PARTITIONS = 6
HANDLERS = "tidings.examples.shop.inventory:handlers"
OWNERS = "SELECT count(DISTINCT owner) FROM tidings_leases WHERE owner IS NOT NULL"
HELD = "SELECT count(*) FROM tidings_leases WHERE owner IS NOT NULL"


def messages(count: int, parts: bool) -> list[OutgoingMessage]:
    """``count`` OrderPlaced of as many orders and products, as a relay sends them (with
    ``--partitions`` when ``parts``)."""
    codec = JsonCodec(EventRegistry(SHOP_EVENTS))

    def plain(record: EventRecord) -> OutgoingMessage:
        return to_message(record, "shop")

    encode = partitioned(plain, PARTITIONS) if parts else plain
    made = []
    for i in range(count):
        order = Order(f"order-{i}", "alice@example.com")
        # A product of its own: orders of other partitions never write the same row, as
        # in a service whose effects follow its aggregates (shared hot rows deadlock
        # between partitions' batches, whatever the number of processes).
        order.add_line(f"sku-{i}", 1, 3_900)
        order.place()
        made.append(encode(codec.encode(order.pending_events[0])))
    return made


def start(db: str, place: servers.NatsPlace, log: Path, parts: bool) -> subprocess.Popen[bytes]:
    """One ``tidings consume`` process (with ``--partitions`` when ``parts``)."""
    options = [f"stream={place.stream}", f"subject_prefix={place.prefix}", "ack_wait=5"]
    with log.open("ab") as output:
        return subprocess.Popen(  # noqa: S603 - the tidings command, arguments built here
            [
                *(sys.executable, "-m", "tidings", "consume", "--db", db),
                *("--from", servers.NATS, "--name", "bench", "--handlers", HANDLERS),
                *(("--partitions", str(PARTITIONS)) if parts else ()),
                *("--every", "60"),
                *(part for option in options for part in ("-o", option)),
            ],
            stdout=output,
            stderr=output,
        )


def scalar(db: str, sql: str) -> int:
    """One number read from the database (0 while the table is not there yet)."""
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def wait_for(check: object, what: str, seconds: float = 120.0) -> None:
    """Poll ``check`` until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.02)


def one_run(processes: int, count: int, folder: Path) -> float:
    """Events per second handled by ``processes`` partitioned consumer processes, or by
    one unpartitioned consumer for 0."""
    parts = processes > 0
    batch = messages(count, parts)
    with servers.nats_stream() as place, servers.pg_database() as db:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(STOCK_DDL)  # before the processes race to make it
        logs = [folder / f"consumer-{processes}-{n}.log" for n in range(max(processes, 1))]
        workers = [start(db, place, log, parts) for log in logs]
        try:
            if parts:
                wait_for(lambda: scalar(db, OWNERS) == processes, "each process leases")
                wait_for(lambda: scalar(db, HELD) == PARTITIONS, "every partition is held")
            else:
                wait_for(lambda: "consumer bench:" in logs[0].read_text(), "the consumer runs")
            publisher = NatsPublisher(
                servers.NATS, stream=place.stream, subject_prefix=place.prefix
            )
            begun = time.perf_counter()
            try:
                for i in range(0, count, 1000):
                    publisher.publish(batch[i : i + 1000])
            finally:
                publisher.close()
            inbox = "SELECT count(*) FROM tidings_inbox"
            wait_for(lambda: scalar(db, inbox) >= count, "every event is handled", 600.0)
            return count / (time.perf_counter() - begun)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait()


def main() -> None:
    """Measure 1, 2 and 3 processes and print the rates, the ratios and the load."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tidings-partitions-"))
    found = {n: Series(f"{n} processes" if n else "1, unpartitioned") for n in (0, 1, 2, 3)}
    for _ in range(args.runs):
        for processes, series in found.items():  # interleaved: the load hits each alike
            series.add(one_run(processes, args.messages, folder))
    base = found[0].median
    rows = [
        [s.name, per_second(s.median), f"{s.median / base:.2f}x", s.spread()]
        for s in found.values()
    ]
    print(f"NATS -> PostgreSQL, {args.messages} events, {PARTITIONS} partitions, inbox on")
    print(table(["consumers", "events/s", "vs unpartitioned", "runs"], rows))
    print(load())


if __name__ == "__main__":
    main()

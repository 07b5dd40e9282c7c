"""Projection catch-up, live lag and a large catch-up's memory, beside eventsourcing's
projection runner and a raw loop measured in the same run.

    make bench-projections               # or: .venv/bin/python benchmarks/projections.py
    .venv/bin/python benchmarks/projections.py --events 20000 --runs 3 --large 1000000
    .venv/bin/python benchmarks/projections.py --only sqlite --profile

The workload: orders of ten events each (one OrderCreated, nine ItemAdded), and a read
model of one row per order (items and cents, added up by an upsert per event).

1. Catch-up events/s, from position 0 to the head, of:
   - tidings' ``ProjectionRunner`` (``run_once`` until it reads nothing; batch 500);
   - eventsourcing's own ``ProjectionRunner`` (``eventsourcing.projection``, 9.x) on the
     same number of its own events, with a view that is a ``PostgresTrackingRecorder``
     writing the upsert and the tracking record in one transaction per event, as its
     documentation shows. PostgreSQL only: its SQLite recorder has no ``subscribe()``, so
     its runner does not run on SQLite (the table says n/a);
   - a raw loop on the driver: read a page of 500 rows of tidings' events table, decode
     each payload, one ``executemany`` upsert, update a checkpoint row, commit.
   Targets: tidings >= 2x eventsourcing, >= 0.7x the raw loop.
2. Live lag, commit -> read model committed, p50 and p99, with a writer in another
   process at a steady ``--rate`` (1,000 events/s) in commits of ten events (one event
   per commit is more commits than this machine's PostgreSQL takes beside the rest), beside
   the raw floor measured in the same run: a follower that wakes as tidings' runner does
   (PRAGMA data_version every 5 ms on SQLite, LISTEN on the outbox channel on PostgreSQL)
   and applies what it finds in one read-model transaction. Target: p50 <= 2x the floor.
3. A large catch-up (``--large`` events, SQLite and PostgreSQL): time and RSS (sampled
   every 100 batches: it should stay flat) of one runner, of a blue/green rebuild of the
   same read model (``Rebuild``: shadow tables, batch 5,000, swapped in), and of two
   partitioned worker processes (two parts), each worker's highest RSS.

Every catch-up runs ``--runs`` times (median shown, every run's figure and the load
beside). Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import pstats
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import servers
from contenders_tidings import ItemAdded, Order, OrderCreated
from report import Series, load, per_second, percentile, table, verdict

import tidings
from tidings.application.projections import Projection

PAGE = 500
TRACKING = "totalsprojection_tracking"  # eventsourcing's tracking table of TotalsProjection
UPSERT = (
    "INSERT INTO {t} (id, items, cents) VALUES ({m}, {m}, {m}) ON CONFLICT (id) DO UPDATE"
    " SET items = {t}.items + excluded.items, cents = {t}.cents + excluded.cents"
)
DDL = "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, items INTEGER, cents INTEGER)"


# -- the tidings projection ---------------------------------------------------------------


def totals(table_name: str, name: str = "bench-totals", version: int = 1) -> Projection:
    """The read model: one row per order, items and cents added up."""
    sql = UPSERT.format(t=table_name, m="?")

    def created(uow: Any, event: OrderCreated) -> None:
        uow.execute(sql, (event.aggregate_id, 0, 0))

    def added(uow: Any, event: ItemAdded) -> None:
        uow.execute(
            sql, (event.aggregate_id, event.quantity, event.quantity * event.unit_price_cents)
        )

    return Projection(
        name,
        {OrderCreated: created, ItemAdded: added},
        schema=[DDL.format(t=table_name)],
        version=version,
    )


def connect(url: str, **options: Any) -> tidings.Store:
    """A tidings store that knows the order events."""
    return tidings.connect(
        url, registry=tidings.EventRegistry([OrderCreated, ItemAdded]), **options
    )


def write_orders(store: tidings.Store, events: int, stem: str = "o") -> None:
    """``events`` events: orders of ten, a hundred orders per unit of work."""
    orders = store.repository(Order)
    n = 0
    while n < events:
        with store.unit_of_work() as uow:
            for _ in range(100):
                if n >= events:
                    break
                order = Order(f"{stem}-{n}")
                order.create(f"c-{n % 97}")
                for _ in range(min(9, events - n - 1)):
                    order.add_item()
                n += 1 + min(9, events - n - 1)
                orders.save(uow, order)


def tidings_catch_up(store: tidings.Store, table_name: str) -> Callable[[], int]:
    """A fresh start from position 0 each call; returns the events read."""

    def run() -> int:
        runner = store.projections([totals(table_name)], batch=PAGE)
        runner.reset("bench-totals")
        runner.start()
        with store.unit_of_work() as uow:
            uow.execute(f"DELETE FROM {table_name}")
        read = 0
        while done := runner.run_once():
            read += done
        runner.close()
        return read

    return run


# -- the raw loop -------------------------------------------------------------------------


class RawLoop:
    """Page, decode, one executemany upsert, checkpoint, commit: on the bare driver."""

    def __init__(self, conn: Any, events_table: str, postgres: bool) -> None:
        self.conn, self.postgres = conn, postgres
        self.m = "%s" if postgres else "?"
        self.read = f"SELECT position, stream_id, event_type, data FROM {events_table}" + (
            f" WHERE position > {self.m} ORDER BY position LIMIT {PAGE}"
        )
        self.upsert = UPSERT.format(t="raw_totals", m=self.m)
        cur = conn.cursor()
        cur.execute(DDL.format(t="raw_totals"))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS raw_checkpoint (name TEXT PRIMARY KEY, position BIGINT)"
        )
        conn.commit()

    def reset(self) -> None:
        cur = self.conn.cursor()
        cur.execute("DELETE FROM raw_totals")
        cur.execute("DELETE FROM raw_checkpoint")
        cur.execute("INSERT INTO raw_checkpoint VALUES ('totals', 0)")
        self.conn.commit()

    def one_batch(self) -> list[dict[str, Any]]:
        """Apply the next page; return its decoded payloads (empty at the head)."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT position FROM raw_checkpoint WHERE name = {self.m}", ("totals",))
        (position,) = cur.fetchone()
        cur.execute(self.read, (position,))
        rows = cur.fetchall()
        if not rows:
            self.conn.commit()
            return []
        params, payloads = [], []
        for _, stream, kind, data in rows:
            payload = data if isinstance(data, dict) else json.loads(data)
            payloads.append(payload)
            if kind == "ItemAdded":
                q = payload["quantity"]
                params.append((stream, q, q * payload["unit_price_cents"]))
            else:
                params.append((stream, 0, 0))
        cur.executemany(self.upsert, params)
        cur.execute(
            f"UPDATE raw_checkpoint SET position = {self.m} WHERE name = {self.m}",
            (rows[-1][0], "totals"),
        )
        self.conn.commit()
        return payloads

    def catch_up(self) -> int:
        self.reset()
        read = 0
        while batch := self.one_batch():
            read += len(batch)
        return read


def sqlite_conn(path: str) -> sqlite3.Connection:
    """The driver, set up as tidings sets up its own connections (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


# -- eventsourcing -----------------------------------------------------------------------


def eventsourcing_catch_up(env: dict[str, str], events: int) -> Callable[[], int]:
    """Write ``events`` of eventsourcing's own and return a catch-up run of its
    ProjectionRunner (a fresh view each call)."""
    from contenders_es_projection import TotalsProjection, TotalsView
    from contenders_eventsourcing import EventsourcingLibrary, Shop
    from eventsourcing.projection import ProjectionRunner as EsRunner

    library = EventsourcingLibrary(env)
    written = 0
    while written < events:
        library.many_per_transaction(str(written), min(10, events - written))
        written += min(10, events - written)
    library.close()

    schema = env["POSTGRES_SCHEMA"]
    conninfo = (
        f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} "
        f"user={env['POSTGRES_USER']} dbname={env['POSTGRES_DBNAME']}"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(DDL.format(t=f"{schema}.es_totals"))

    def run() -> int:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {schema}.es_totals")
            # the view's tracking table (named after the projection) and the backups the
            # library makes of it when it finds it empty: the next view starts afresh
            found = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_name LIKE %s",
                (schema, f"%{TRACKING}"),
            ).fetchall()
            for (name,) in found:
                conn.execute(f"DROP TABLE {schema}.{name}")
        with EsRunner(
            application_class=Shop,
            projection_class=TotalsProjection,
            view_class=TotalsView,
            env=env,
        ) as runner:
            head = int(runner.app.recorder.max_notification_id() or 0)
            # its own wait() backs off to 800 ms between looks: look every 5 ms instead
            while (runner.view.max_tracking_id(runner.app_name) or 0) < head:
                runner.run_forever(timeout=0.005)  # raises the processing thread's error
            return head

    return run


# -- catch-up ---------------------------------------------------------------------------


@dataclass
class CatchUp:
    database: str
    tidings: Series
    eventsourcing: Series | None
    raw: Series


def measure(name: str, runs: int, work: Callable[[], int], series: Series) -> None:
    for _ in range(runs):
        start = time.perf_counter()
        count = work()
        series.add(count / (time.perf_counter() - start))
    print(f"  {name}: {series.values[-1]:,.0f} events/s ({load()})", flush=True)


def sqlite_catch_up(events: int, runs: int, profile: bool) -> CatchUp:
    with servers.sqlite_file() as url:
        store = connect(url)
        write_orders(store, events)
        tidings_run = tidings_catch_up(store, "totals")
        raw = RawLoop(sqlite_conn(url.removeprefix("sqlite:///")), "tidings_events", False)
        result = CatchUp("SQLite", Series("tidings"), None, Series("raw"))
        print(f"SQLite catch-up of {events:,} events", flush=True)
        for _ in range(runs):  # interleaved, so a noisy minute hits both
            measure("tidings", 1, tidings_run, result.tidings)
            measure("raw loop", 1, raw.catch_up, result.raw)
        if profile:
            profiled(tidings_run)
        raw.conn.close()
        store.close()
    return result


def postgres_catch_up(events: int, runs: int, profile: bool) -> CatchUp:
    with servers.pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bench_es")
        store = connect(url)
        write_orders(store, events)
        tidings_run = tidings_catch_up(store, "totals")
        raw = RawLoop(psycopg.connect(url), "tidings_events", True)
        parts = psycopg.conninfo.conninfo_to_dict(url)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(parts["dbname"]),
            "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(parts.get("port", "5432")),
            "POSTGRES_USER": str(parts.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(parts.get("password", "")),
            "POSTGRES_SCHEMA": "bench_es",
        }
        es_run = eventsourcing_catch_up(env, events)
        result = CatchUp("PostgreSQL", Series("tidings"), Series("eventsourcing"), Series("raw"))
        print(f"PostgreSQL catch-up of {events:,} events", flush=True)
        for _ in range(runs):
            measure("tidings", 1, tidings_run, result.tidings)
            measure("raw loop", 1, raw.catch_up, result.raw)
            assert result.eventsourcing is not None
            measure("eventsourcing", 1, es_run, result.eventsourcing)
        if profile:
            profiled(tidings_run)
        raw.conn.close()
        store.close()
    return result


def profiled(work: Callable[[], int]) -> None:
    profile = cProfile.Profile()
    profile.enable()
    work()
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(18)


def catch_up_table(results: list[CatchUp]) -> str:
    rows = []
    for r in results:
        t, raw = r.tidings.median, r.raw.median
        es = r.eventsourcing.median if r.eventsourcing is not None else None
        rows.append(
            [
                r.database,
                per_second(t),
                per_second(es) if es else "n/a",
                per_second(raw),
                f"{t / es:.2f}x {verdict(t >= 2 * es)}" if es else "n/a",
                f"{t / raw:.2f}x {verdict(t >= 0.7 * raw)}",
            ]
        )
    return table(
        [
            "catch-up, events/s",
            "tidings",
            "eventsourcing",
            "raw loop",
            "vs es (>= 2x)",
            "vs raw (>= 0.7x)",
        ],
        rows,
    )


# -- live lag ---------------------------------------------------------------------------


def writer(  # noqa: PLR0917 - the arguments of a spawned process
    url: str, rate: float, seconds: float, per_commit: int, out: Any, outbox: bool
) -> None:
    """In its own process: ``per_commit`` events per transaction, ``rate`` events/s in
    all; sends (seq, commit time) pairs back."""
    store = connect(url, outbox=outbox)
    orders = store.repository(Order)
    stamps: list[tuple[int, float]] = []
    start = time.time()
    total = int(rate * seconds)
    for first in range(0, total, per_commit):
        due = start + first / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        seqs = range(first, min(first + per_commit, total))
        with store.unit_of_work() as uow:
            for seq in seqs:
                order = Order(f"live-{uuid.uuid4().hex[:8]}-{seq}")
                order.create(str(seq))
                orders.save(uow, order)
        now = time.time()
        stamps.extend((seq, now) for seq in seqs)
    store.close()
    out.send((stamps, time.time() - start))
    out.close()


@contextmanager
def writing(
    url: str, rate: float, seconds: float, outbox: bool, per_commit: int = 10
) -> Iterator[Callable[[], Any]]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=writer, args=(url, rate, seconds, per_commit, send, outbox))
    process.start()
    try:
        yield receive.recv
    finally:
        process.join(timeout=seconds + 60)


def follow_writer(
    url: str,
    rate: float,
    seconds: float,
    outbox: bool,
    *,
    follow: Callable[[], None],
    applied: dict[int, float],
    stop: threading.Event,
) -> tuple[list[float], float]:
    """Run ``follow`` on a thread while the writer commits at ``rate``; wait (10 s at
    most) for it to apply what was written, then stop it. The lag of each event applied,
    and the writer's rate."""
    thread = threading.Thread(target=follow)
    with writing(url, rate, seconds, outbox) as result:
        thread.start()
        stamps, took = result()
    deadline = time.time() + 10
    while len(applied) < len(stamps) and time.time() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    return [applied[s] - t for s, t in stamps if s in applied], len(stamps) / took


def live_tidings(url: str, rate: float, seconds: float, outbox: bool) -> tuple[list[float], float]:
    """Lags (seconds) of every event through tidings' runner, and the writer's rate."""
    store = connect(url)
    applied: dict[int, float] = {}
    pending: list[int] = []

    def created(uow: Any, event: OrderCreated) -> None:
        pending.append(int(event.customer_id))
        uow.execute(UPSERT.format(t="live_totals", m="?"), (event.aggregate_id, 0, 0))

    projection = Projection(
        f"live-{uuid.uuid4().hex[:6]}",
        {OrderCreated: created},
        schema=[DDL.format(t="live_totals")],
    )
    runner = store.projections([projection], batch=PAGE, poll=1.0)
    runner.start()
    while runner.run_once():  # past any earlier phase's events
        pass
    pending.clear()
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            if runner.run_once():
                now = time.time()
                for seq in pending:
                    applied[seq] = now
                pending.clear()
            else:
                runner._signal.wait_for_work(1.0)

    try:
        return follow_writer(url, rate, seconds, outbox, follow=follow, applied=applied, stop=stop)
    finally:
        runner.close()
        store.close()


def live_raw(url: str, rate: float, seconds: float, outbox: bool) -> tuple[list[float], float]:
    """The floor: wake as the runner does, then one read-model transaction."""
    store = connect(url, outbox=outbox)
    postgres = url.startswith("postgresql")
    events_table = store.database.tables["events"]  # type: ignore[attr-defined]
    channel = store.outbox.channel if postgres and store.outbox else ""  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        head = int(
            uow.execute(f"SELECT coalesce(max(position), 0) FROM {events_table}").fetchone()[0]
        )
    store.close()
    conn: Any = psycopg.connect(url) if postgres else sqlite_conn(url.removeprefix("sqlite:///"))
    raw = RawLoop(conn, events_table, postgres)
    raw.reset()
    cur = conn.cursor()
    cur.execute(f"UPDATE raw_checkpoint SET position = {raw.m}", (head,))
    conn.commit()
    applied: dict[int, float] = {}
    stop = threading.Event()

    def follow() -> None:
        if postgres:
            listener = psycopg.connect(url, autocommit=True)
            listener.execute(f"LISTEN {channel}")
        seen = None
        while not stop.is_set():
            batch = raw.one_batch()
            if batch:
                now = time.time()
                for payload in batch:
                    applied[int(payload["customer_id"])] = now
                continue
            if postgres:
                for _ in listener.notifies(timeout=1.0, stop_after=1):
                    pass
            else:  # tidings' SQLite signal: data_version every 5 ms
                while not stop.is_set():
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    conn.commit()
                    if seen is not None and version != seen:
                        seen = version
                        break
                    seen = version
                    time.sleep(0.005)
        if postgres:
            listener.close()

    try:
        return follow_writer(url, rate, seconds, outbox, follow=follow, applied=applied, stop=stop)
    finally:
        conn.close()


def lag_row(
    database: str, mine: list[float], floor: list[float], rates: tuple[float, float]
) -> list[str]:
    p50, p99 = percentile(mine, 50) * 1000, percentile(mine, 99) * 1000
    f50, f99 = percentile(floor, 50) * 1000, percentile(floor, 99) * 1000
    return [
        database,
        f"{rates[0]:,.0f} / {rates[1]:,.0f}",
        f"{p50:.1f} / {p99:.1f}",
        f"{f50:.1f} / {f99:.1f}",
        f"{p50 / f50:.2f}x {verdict(p50 <= 2 * f50)}",
        load(),
    ]


def live_lag(rate: float, seconds: float, only: str) -> str:
    rows = []
    if only in ("", "sqlite"):
        with servers.sqlite_file() as url:
            connect(url).close()
            print(f"SQLite live lag at {rate:,.0f} events/s for {seconds:.0f} s", flush=True)
            mine, r1 = live_tidings(url, rate, seconds, outbox=False)
            floor, r2 = live_raw(url, rate, seconds, outbox=False)
            rows.append(lag_row("SQLite", mine, floor, (r1, r2)))
    if only in ("", "postgresql"):
        with servers.pg_database() as url:
            connect(url, outbox=True).close()
            print(f"PostgreSQL live lag at {rate:,.0f} events/s for {seconds:.0f} s", flush=True)
            mine, r1 = live_tidings(url, rate, seconds, outbox=True)
            floor, r2 = live_raw(url, rate, seconds, outbox=True)
            rows.append(lag_row("PostgreSQL", mine, floor, (r1, r2)))
    return table(
        [
            "live lag",
            "writer events/s (tidings / floor)",
            "tidings p50 / p99 ms",
            "raw floor p50 / p99 ms",
            "p50 vs floor (<= 2x)",
            "machine",
        ],
        rows,
    )


# -- a large catch-up --------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def partitioned_worker(url: str, owner: str, out: Any) -> None:
    """In its own process: one of two workers of a 2-part projection, until every part
    is at the head; sends its highest RSS back."""
    store = connect(url)
    runner = store.projections(
        [totals("parted_totals", "bench-parted")], batch=PAGE, partitions=2, ttl=3.0,
        runner_id=owner,
    )  # fmt: skip
    top = rss_mb()
    while True:
        if not runner.run_once():
            if all(s.lag_events == 0 for s in runner.status(runner.names)):
                break
            time.sleep(0.05)
        top = max(top, rss_mb())
    runner.release()
    store.close()
    out.send(top)
    out.close()


def two_workers(url: str) -> tuple[float, list[float]]:
    """The same catch-up by two partitioned worker processes: seconds, and each RSS."""
    store = connect(url)  # the tables once, before the workers: PostgreSQL's CREATE TABLE
    store.projections(  # IF NOT EXISTS may fail in one of two racing transactions
        [totals("parted_totals", "bench-parted")], partitions=2, runner_id="setup"
    ).start()
    store.close()
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(2)]
    start = time.perf_counter()
    workers = [
        context.Process(target=partitioned_worker, args=(url, f"w{n}", pipes[n][1]))
        for n in range(2)
    ]
    for w in workers:
        w.start()
    tops = [pipe[0].recv() for pipe in pipes]
    took = time.perf_counter() - start
    for w in workers:
        w.join()
    print(f"  two partitioned workers: {took:.0f} s ({load()})", flush=True)
    return took, tops


def one_runner(url: str) -> tuple[int, float, list[float]]:
    """The catch-up by one runner in this process: events, seconds, RSS samples."""
    store = connect(url)
    runner = store.projections([totals("totals")], batch=PAGE)
    runner.start()
    samples = [rss_mb()]
    read = 0
    start = time.perf_counter()
    while done := runner.run_once():
        read += done
        if read % (PAGE * 100) == 0:
            samples.append(rss_mb())
    took = time.perf_counter() - start
    runner.close()
    store.close()
    print(f"  one runner: {took:.0f} s ({load()})", flush=True)
    return read, took, samples


def rebuilt(url: str) -> tuple[float, list[float]]:
    """A blue/green rebuild of the same read model (version 2, the CLI's batch of 5,000)
    into shadow tables, swapped in: seconds and RSS samples."""
    store = connect(url)
    samples = [rss_mb()]

    def sample() -> bool:  # called before each batch
        samples.append(rss_mb())
        return False

    job = store.rebuild(totals("totals", version=2), batch=5000)
    start = time.perf_counter()
    job.begin(restart=True)
    job.catch_up(sample)
    job.swap()
    took = time.perf_counter() - start
    job.drop_old()
    store.close()
    print(f"  rebuild: {took:.0f} s ({load()})", flush=True)
    return took, samples


def large_catch_up(events: int, backend: str) -> str:
    places = {"SQLite": servers.sqlite_file, "PostgreSQL": servers.pg_database}
    with places[backend]() as url:
        options = {"synchronous": "NORMAL"} if backend == "SQLite" else {}
        store = connect(url, **options)  # writing the log is not what is measured
        print(f"{backend}: writing {events:,} events ...", flush=True)
        start = time.perf_counter()
        write_orders(store, events)
        print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
        store.close()
        read, took, samples = one_runner(url)
        rebuild = rebuilt(url)
        two = two_workers(url)
    first, top, last = samples[0], max(samples), samples[-1]
    return table(
        [
            f"large catch-up ({backend})",
            "events",
            "seconds",
            "events/s",
            "RSS MB first / max / last",
            "machine",
        ],
        [
            [
                "tidings runner",
                f"{read:,}",
                f"{took:.0f}",
                per_second(read / took),
                f"{first:.0f} / {top:.0f} / {last:.0f}",
                load(),
            ],
            [
                "rebuild (shadow tables, batch 5,000, swapped)",
                f"{read:,}",
                f"{rebuild[0]:.0f}",
                per_second(read / rebuild[0]),
                f"{rebuild[1][0]:.0f} / {max(rebuild[1]):.0f} / {rebuild[1][-1]:.0f}",
                load(),
            ],
            [
                "two partitioned workers (2 processes, 2 parts; from their start)",
                f"{read:,}",
                f"{two[0]:.0f}",
                per_second(read / two[0]),
                " / ".join(f"{mb:.0f} max" for mb in two[1]),
                load(),
            ],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per catch-up")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="live events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="live phase length")
    parser.add_argument("--large", type=int, default=1_000_000, help="0: skip it")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default="")
    parser.add_argument("--skip", action="append", default=[], choices=["catch-up", "lag"])
    parser.add_argument("--profile", action="store_true", help="cProfile one tidings catch-up")
    args = parser.parse_args()
    out = []
    if "catch-up" not in args.skip:
        results = []
        if args.only in ("", "sqlite"):
            results.append(sqlite_catch_up(args.events, args.runs, args.profile))
        if args.only in ("", "postgresql"):
            results.append(postgres_catch_up(args.events, args.runs, args.profile))
        out.append(catch_up_table(results))
    if "lag" not in args.skip:
        out.append(live_lag(args.rate, args.seconds, args.only))
    if args.large:
        if args.only in ("", "sqlite"):
            out.append(large_catch_up(args.large, "SQLite"))
        if args.only in ("", "postgresql"):
            out.append(large_catch_up(args.large, "PostgreSQL"))
    print()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()

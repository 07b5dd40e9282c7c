"""Event store benchmarks: tidings, eventsourcing and the raw driver, side by side.

    make bench-es                       # or: python benchmarks/event_store.py [--quick]

Every measure runs the three in the same process, on the same disk, one after the other
in interleaved rounds (so drift in the machine's speed is shared), and prints absolute
figures and tidings' ratios against the issue's targets. SQLite runs in WAL mode with
synchronous=FULL for all three. PostgreSQL runs need the server at TIDINGS_BENCH_PG
(default postgresql://postgres@127.0.0.1:5432/test); a database of its own is created
and dropped. Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contenders_eventsourcing import EventsourcingLibrary
from contenders_raw import RawPostgres, RawSqlite
from contenders_tidings import TidingsLibrary
from report import on_terminal
from rich.console import Console
from rich.table import Table

console = Console()
ROUNDS = 20  # short interleaved rounds: a burst of other work on the machine hits all three


@dataclass
class Figure:
    """One row of the table: a measure, its unit, the three figures and the target."""

    measure: str
    unit: str
    tidings: float
    eventsourcing: float
    raw: float | None
    target: str
    met: bool | None
    higher_is_better: bool = True


def timed(action: Callable[[], Any]) -> float:
    """Seconds ``action`` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def turns(measures: Sequence[Callable[[int], float]], rounds: int) -> list[list[float]]:
    """Call every measure once per round (with the round's number), in an order that
    rotates from round to round, so that a slow stretch of the machine falls on all of
    them and nobody always goes first; each measure's results, in round order."""
    found: list[list[float]] = [[] for _ in measures]
    order = list(range(len(measures)))
    for r in range(rounds):
        for i in order[r % len(order) :] + order[: r % len(order)]:
            found[i].append(measures[i](r))
    return found


def interleaved(contenders: list[Any], rounds: list[Callable[[Any, int], Any]]) -> list[float]:
    """Run every round on each contender, taking turns; the total seconds per contender."""
    measures = [
        (lambda r, c=c, i=i: timed(lambda: rounds[r](c, i))) for i, c in enumerate(contenders)
    ]
    return [sum(seconds) for seconds in turns(measures, len(rounds))]


def one_event_each(contenders: list[Any], total: int, rounds: int) -> list[float]:
    """a: ``total`` aggregates, one event and one transaction each; events per second."""
    size = total // rounds
    names = [
        [[f"a-{r}-{n}-{i}" for n in range(size)] for i in range(len(contenders))]
        for r in range(rounds)
    ]
    steps = [(lambda c, i, r=r: c.one_per_transaction(names[r][i])) for r in range(rounds)]
    return [size * rounds / t for t in interleaved(contenders, steps)]


def thousand_per_transaction(contenders: list[Any], transactions: int, rounds: int) -> list[float]:
    """b: ``transactions`` transactions of 1,000 events each; events per second."""
    per_round = transactions // rounds
    steps = [
        (
            lambda c, i, r=r: [
                c.many_per_transaction(f"b-{r}-{n}-{i}-{uuid.uuid4().hex[:6]}", 1000)
                for n in range(per_round)
            ]
        )
        for r in range(rounds)
    ]
    return [per_round * rounds * 1000 / t for t in interleaved(contenders, steps)]


def long_stream(libraries: list[Any], raw: RawSqlite, length: int) -> list[tuple[float, float]]:
    """c: one ``length``-event stream loaded without and with a snapshot (seconds)."""
    streams = [
        library.many_per_transaction(f"c-{uuid.uuid4().hex[:8]}", length) for library in libraries
    ]
    raw.many_per_transaction("c-raw", length)
    loads: list[Callable[[], Any]] = [
        *(lambda lib=lib, s=s: lib.load(s) for lib, s in zip(libraries, streams, strict=True)),
        lambda: raw.load("c-raw"),
    ]
    for load in loads:
        load()  # warm: the pages in the cache, the decoders built
    # Seven loads each (and 200 from a snapshot), taking turns; the median of each.
    without = turns([(lambda r, load=load: timed(load)) for load in loads], 7)
    for library, stream in zip(libraries, streams, strict=True):
        library.snapshot(stream)
    from_snapshot = [
        (lambda r, lib=lib, s=s: timed(lambda: lib.load_from_snapshot(s)))
        for lib, s in zip(libraries, streams, strict=True)
    ]
    with_snapshot = turns(from_snapshot, 200)
    results = [
        (statistics.median(w), statistics.median(s))
        for w, s in zip(without, with_snapshot, strict=False)
    ]
    results.append((statistics.median(without[-1]), float("nan")))
    return results


def whole_log(contenders: list[Any]) -> list[float]:
    """d: the whole log read in pages of 1,000, decoded; events per second (best of 3)."""
    rates = []
    for contender in contenders:
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            count = contender.read_log(1000)
            best = max(best, count / (time.perf_counter() - start))
        rates.append(best)
    return rates


def concurrent_writers(
    contenders: list[Any], writers: int, each: int, rounds: int = 3
) -> list[float]:
    """e: ``writers`` threads, each ``each`` one-event transactions on its own streams.

    A round takes about a second per contender, so one stall of the machine could decide
    it: the contenders take turns for ``rounds`` rounds and each keeps its median.
    """
    measures = [(lambda r, c=c: _writers_once(c, writers, each)) for c in contenders]
    return [statistics.median(found) for found in turns(measures, rounds)]


def _writers_once(contender: Any, writers: int, each: int) -> float:
    """Events/s of one round of ``writers`` concurrent writers."""
    ready = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        conn = contender.connect() if hasattr(contender, "connect") else None
        streams = [f"e-{w}-{n}-{uuid.uuid4().hex[:6]}" for n in range(each)]
        ready.wait()
        if conn is None:
            contender.one_per_transaction(streams)
        else:
            contender.one_per_transaction(streams, conn)
            conn.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return writers * each / (time.perf_counter() - start)


def sqlite_figures(folder: Path, scale: float) -> list[Figure]:
    """a to d on SQLite files in ``folder``."""
    tidings_lib = TidingsLibrary(f"sqlite:///{folder / 'tidings.db'}")
    es = EventsourcingLibrary(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(folder / "es.db")}
    )
    raw = RawSqlite(str(folder / "raw.db"))
    everyone = [tidings_lib, es, raw]
    try:
        console.print("SQLite a: one event per transaction ...")
        a = one_event_each(everyone, int(20_000 * scale), ROUNDS)
        console.print("SQLite b: 1,000 events per transaction ...")
        b = thousand_per_transaction(everyone, max(4, int(20 * scale)), 4 if scale < 1 else 10)
        console.print("SQLite c: a 10,000-event stream ...")
        c = long_stream([tidings_lib, es], raw, 10_000)
        console.print("SQLite d: the whole log ...")
        d = whole_log(everyone)
    finally:
        for contender in everyone:
            contender.close()
    ms = 1000.0
    return [
        Figure("a. 1 event/tx", "events/s", a[0], a[1], a[2], ">= 0.90x raw", a[0] >= 0.9 * a[2]),
        Figure("b. 1,000 events/tx", "events/s", b[0], b[1], b[2], ">= 2x es", b[0] >= 2 * b[1]),
        Figure(
            "c. 10,000-event load, no snapshot",
            "ms",
            c[0][0] * ms,
            c[1][0] * ms,
            c[2][0] * ms,
            "<= 0.25x es",
            c[0][0] <= 0.25 * c[1][0],
            higher_is_better=False,
        ),
        Figure(
            "c. 10,000-event load, snapshot",
            "ms",
            c[0][1] * ms,
            c[1][1] * ms,
            None,
            "<= 1x es",
            c[0][1] <= c[1][1],
            higher_is_better=False,
        ),
        Figure(
            "d. log read, decoded", "events/s", d[0], d[1], d[2], ">= 1.5x es", d[0] >= 1.5 * d[1]
        ),
    ]


def postgres_figures(admin_url: str, scale: float) -> list[Figure]:
    """e on a database of its own: a, b and eight concurrent writers."""
    import psycopg

    name = f"tidings_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench_es")  # eventsourcing expects it to exist
    parts = psycopg.conninfo.conninfo_to_dict(url)
    tidings_lib = TidingsLibrary(url, schema="bench_tidings")
    es = EventsourcingLibrary(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": name,
            "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(parts.get("port", "5432")),
            "POSTGRES_USER": str(parts.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(parts.get("password", "")),
            "POSTGRES_SCHEMA": "bench_es",
            "POSTGRES_POOL_SIZE": "8",
        }
    )
    raw = RawPostgres(url, "bench_raw")
    everyone = [tidings_lib, es, raw]
    try:
        console.print("PostgreSQL a: one event per transaction ...")
        a = one_event_each(everyone, int(10_000 * scale), ROUNDS)
        console.print("PostgreSQL b: 1,000 events per transaction ...")
        b = thousand_per_transaction(everyone, max(4, int(20 * scale)), 4 if scale < 1 else 10)
        console.print("PostgreSQL e: 8 concurrent writers ...")
        e = concurrent_writers(everyone, 8, max(50, int(500 * scale)))
    finally:
        for contender in everyone:
            contender.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return [
        Figure(
            "PG a. 1 event/tx", "events/s", a[0], a[1], a[2], ">= 0.80x raw", a[0] >= 0.8 * a[2]
        ),
        Figure("PG b. 1,000 events/tx", "events/s", b[0], b[1], b[2], "(none)", None),
        Figure(
            "PG e. 8 writers, 1 event/tx",
            "events/s",
            e[0],
            e[1],
            e[2],
            ">= 3x es",
            e[0] >= 3 * e[1],
        ),
    ]


def ratio(mine: float, theirs: float | None, higher_is_better: bool) -> str:
    """tidings' figure against another, as a speed ratio (above 1: tidings is faster)."""
    if theirs is None or math.isnan(theirs) or not mine:
        return "-"
    return f"{(mine / theirs if higher_is_better else theirs / mine):.2f}x"


def show(figures: list[Figure]) -> None:
    """Print the table: framed on a terminal, and always as Markdown."""
    table = Table(
        title="tidings vs eventsourcing vs the raw driver (speed ratios: above 1 is faster)"
    )
    headers = [
        "measure",
        "unit",
        "tidings",
        "eventsourcing",
        "raw driver",
        "vs es",
        "vs raw",
        "target",
        "met",
    ]
    for header in headers:
        table.add_column(header, justify="left" if header in ("measure", "target") else "right")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for f in figures:
        cells = [
            f.measure,
            f.unit,
            number(f.tidings),
            number(f.eventsourcing),
            number(f.raw),
            ratio(f.tidings, f.eventsourcing, f.higher_is_better),
            ratio(f.tidings, f.raw, f.higher_is_better),
            f.target,
            {True: "yes", False: "NO", None: "-"}[f.met],
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    if on_terminal():  # a framed table is cut to unreadable columns in a narrow log
        console.print(table)
    print("\n".join(lines))  # Markdown, for the README and for logs


def number(value: float | None) -> str:
    """A figure with sensible precision."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def main() -> None:
    """Run the SQLite measures, then PostgreSQL's unless --no-postgres."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes: a smoke run")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL part")
    parser.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="admin URL for PostgreSQL"
    )
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    from importlib.metadata import version

    console.print(
        f"tidings {version('tidings')}, eventsourcing {version('eventsourcing')}, "
        f"Python {sys.version.split()[0]}, SQLite {__import__('sqlite3').sqlite_version}"
    )
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as folder:
        figures = sqlite_figures(Path(folder), scale)
    if not args.no_postgres:
        figures += postgres_figures(args.pg, scale)
    show(figures)


if __name__ == "__main__":
    main()

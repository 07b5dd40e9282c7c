"""Sagas of four local steps per second, with the durable saga log, beside the raw limit
of the same database measured in the same run.

    make bench-sagas                      # or: .venv/bin/python benchmarks/sagas.py
    .venv/bin/python benchmarks/sagas.py --sagas 1000 --runs 3 --profile sqlite

On SQLite (a file, WAL, synchronous=FULL: as tidings opens it by default), SQLite with
synchronous=NORMAL (a commit does not wait for the disk: what is left is the CPU's work)
and PostgreSQL (the local server, a fresh schema), one after another, single-threaded:

1. Raw commits/s: the driver alone (sqlite3, psycopg) commits one small row per
   transaction, one transaction after another, for ``--seconds``.
2. Sagas/s: ``Orchestrator.start`` of a saga of four local steps, each inserting one row
   through ``ctx.uow``; each saga runs to COMPLETED before the next starts.
3. Hand-written sagas/s: the raw driver making the same commits with the same rows (the
   step's row, the saga's row moved on at its expected version, its transitions), with
   no orchestration: what the design's durable writes allow by themselves.
4. Bare chain/s: the same four functions called in one unit of work, one after another:
   the work of a saga with no orchestration, no saga log and one commit.

The bound is raw commits/s divided by the commits one saga needs, counted in the run
(the saga's history: every committed write records its transitions under one sequence
number). The design writes 5 per saga of four steps: 1 to record the saga with the first
step's ``started`` (written before the action: the lease that lets another orchestrator
see an interrupted step), then 1 per step: its effect, its ``succeeded`` and what follows
(the next step's ``started``, or the saga's completion) in the step's own transaction.
Target: sagas/s >= 0.8 x the bound. The overhead per step is (1 / sagas/s - 1 / bare
chain/s) / 4. Beside the commits it prints the statements a saga sends, BEGIN and COMMIT
included (the raw loop sends 3 per commit). ``--profile`` runs the saga loop once more
under cProfile and prints the functions that take the most time.

Every configuration runs ``--runs`` times; tables show the median, with every run's figure
and the machine's load. Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
import servers
from report import Series, load, per_second, table, verdict

import tidings
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.saga import SagaDefinition, Step, StepContext

_to_json = msgspec.json.Encoder().encode

SYNCHRONOUS = {"sqlite": "FULL", "sqlite, synchronous=NORMAL": "NORMAL"}
DATABASES = (*SYNCHRONOUS, "postgresql")
STEPS = ("create-order", "charge-payment", "reserve-inventory", "send-confirmation")
TARGET = 0.8


def step_writing(table_name: str, what: str) -> Callable[[StepContext], dict[str, Any]]:
    """A local step: one row into ``table_name`` through the step's unit of work."""

    def act(ctx: StepContext) -> dict[str, Any]:
        ctx.uow.execute(
            f"INSERT INTO {table_name} (saga, what) VALUES (:saga, :what)",
            {"saga": ctx.data["n"], "what": what},
        )
        return {what: True}

    return act


def definition(table_name: str) -> SagaDefinition:
    """The benchmark's saga: four local steps, compensations that are never needed."""
    return SagaDefinition(
        "bench-four-steps",
        [Step(name, step_writing(table_name, name), compensate=None) for name in STEPS],
    )


class ChainContext:
    """What each function of the bare chain is given (a StepContext without a saga)."""

    def __init__(self, data: dict[str, Any], uow: Any) -> None:
        self.data, self.uow, self.idempotency_key = data, uow, ""

    def record_discrepancy(self, amount: float, note: str) -> None:
        """Not used by the benchmark's steps."""


@contextmanager
def place(db: str) -> Iterator[tuple[str, str]]:
    """(store URL, schema) of a fresh SQLite file or PostgreSQL schema."""
    if db.startswith("sqlite"):
        with servers.sqlite_file() as url:
            yield url, "public"
    else:
        with servers.pg_schema() as schema:
            yield servers.PG_URL, schema


def raw_commits(db: str, url: str, schema: str, seconds: float) -> float:
    """Commits/s of the driver alone: one small INSERT per transaction."""
    name = servers.unique("raw_commits")
    if db.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[db]}")
        conn.execute(f"CREATE TABLE {name} (saga INTEGER, what TEXT)")
        done, end = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"INSERT INTO {name} VALUES (?, ?)", (done, "x"))
            conn.execute("COMMIT")
            done += 1
        elapsed = time.perf_counter() - start
        conn.close()
        return done / elapsed
    with psycopg.connect(url) as pg:
        pg.execute(f"CREATE TABLE {schema}.{name} (saga INTEGER, what TEXT)")
        pg.commit()
        done, end = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            pg.execute(f"INSERT INTO {schema}.{name} VALUES (%s, %s)", (done, "x"))
            pg.commit()
            done += 1
        return done / (time.perf_counter() - start)


def open_store(db: str, url: str, schema: str) -> tuple[tidings.Store, str]:
    """A store on the place and the name of the steps' table in it."""
    if db == "postgresql":
        store = tidings.connect(url, schema=schema)
    else:
        store = tidings.connect(url, synchronous=SYNCHRONOUS[db])
    effects = f"{schema}.bench_effects" if db == "postgresql" else "bench_effects"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE IF NOT EXISTS {effects} (saga INTEGER, what TEXT)")
    return store, effects


TRANSACTIONS: dict[str, float] = {}
"""Per database: transactions the orchestrator opened per saga (reads included)."""
STATEMENTS: dict[str, float] = {}
"""Per database: statements sent per saga, BEGIN and COMMIT included (the raw loop sends
3 per commit: BEGIN, its INSERT, COMMIT)."""


def saga_rate(store: tidings.Store, effects: str, count: int) -> tuple[float, int]:
    """Sagas/s of ``count`` sagas run one after another, and the commits one needed."""
    saga = definition(effects)
    sagas = store.sagas([saga])
    run = uuid.uuid4().hex[:8]
    opened = [0]
    database: Any = store.database
    begin = database.transaction

    def counted() -> Any:
        opened[0] += 1
        return begin()

    sent = [0]
    execute = UnitOfWork.execute

    def counted_execute(uow: UnitOfWork, sql: str, params: Any = ()) -> Any:
        sent[0] += 1
        return execute(uow, sql, params)

    database.transaction = counted  # counts every unit of work the orchestrator opens
    UnitOfWork.execute = counted_execute  # type: ignore[method-assign]  # and its statements
    start = time.perf_counter()
    try:
        for n in range(count):
            result = sagas.start(saga, {"n": n}, saga_id=f"{run}-{n}")
        elapsed = time.perf_counter() - start
    finally:
        database.transaction = begin
        UnitOfWork.execute = execute  # type: ignore[method-assign]
    TRANSACTIONS[database.dialect] = opened[0] / count
    STATEMENTS[database.dialect] = (sent[0] + 2 * opened[0]) / count
    if result.state != "COMPLETED":
        raise RuntimeError(f"the benchmark's saga ended {result.state}: {result.error}")
    with store.unit_of_work() as uow:
        writes = uow.execute(
            f"SELECT COUNT(DISTINCT seq) FROM {store.database.tables['saga_transitions']}"  # type: ignore[attr-defined]
            " WHERE saga_id = :id",
            {"id": result.saga_id},
        ).fetchone()[0]
    return count / elapsed, int(writes)


def hand_written_rate(db: str, store: tidings.Store, effects: str, count: int) -> float:
    """Sagas/s of a hand-written loop with the raw driver doing the durable work of the
    design, commit for commit: the saga's row and its first two transitions in one
    transaction, then per step one transaction with the step's row, the saga's row moved
    on at its expected version (checked) and the step's two transitions. The same tables
    and indexes as tidings', the same JSON columns, no orchestration: the floor the
    design itself sets, beside the bound of one-row commits."""
    tables: Any = store.database.tables  # type: ignore[attr-defined]
    sagas, transitions = tables["sagas"], tables["saga_transitions"]
    insert_saga = (
        f"INSERT INTO {sagas} (saga_id, saga_type, definition_version, state, data, step,"
        " attempt, started, executed, compensated, errors, version, wake_at)"
        " VALUES ({p}, 'hand', 1, 'RUNNING', {p}, 0, 1, 1, '[]', '[]', '[]', 1, {p})"
    )
    move = (
        f"UPDATE {sagas} SET state = {{p}}, data = {{p}}, step = {{p}}, executed = {{p}},"
        " version = {p}, wake_at = {p}, started = {p} WHERE saga_id = {p} AND version = {p}"
    )
    record = (
        f"INSERT INTO {transitions} (saga_id, seq, sub, kind, step, at, detail, by_whom, amount)"
        " VALUES ({p}, {p}, 0, {p}, {p}, {p}, '', '', 0), ({p}, {p}, 1, {p}, {p}, {p}, '', '', 0)"
    )
    effect = f"INSERT INTO {effects} (saga, what) VALUES ({{p}}, {{p}})"
    mark = "?" if db.startswith("sqlite") else "%s"
    insert_saga, move, record, effect = (
        sql.replace("{p}", mark) for sql in (insert_saga, move, record, effect)
    )
    run = uuid.uuid4().hex[:8]

    def saga(write: Callable[[list[tuple[str, tuple[Any, ...]]]], int], n: int) -> None:
        saga_id, data, executed, now = f"{run}-{n}", {"n": n}, list[str](), time.time()
        write(
            [
                (insert_saga, (saga_id, _to_json(data), now)),
                (
                    record,
                    (
                        saga_id,
                        1,
                        "saga_started",
                        "",
                        now,
                        saga_id,
                        1,
                        "action_started",
                        STEPS[0],
                        now,
                    ),
                ),
            ]
        )
        for i, name in enumerate(STEPS):
            now = time.time()
            data = {**data, name: True}
            executed = [*executed, name]
            last = i == len(STEPS) - 1
            follows = ("saga_completed", "") if last else ("action_started", STEPS[i + 1])
            state = "COMPLETED" if last else "RUNNING"
            moved = write(
                [
                    (effect, (n, name)),
                    (
                        move,
                        (
                            state,
                            _to_json(data),
                            i + 1,
                            _to_json(executed),
                            i + 2,
                            now,
                            int(not last),
                            saga_id,
                            i + 1,
                        ),
                    ),
                    (
                        record,
                        (
                            saga_id,
                            i + 2,
                            "step_succeeded",
                            name,
                            now,
                            saga_id,
                            i + 2,
                            *follows,
                            now,
                        ),
                    ),
                ]
            )
            if moved != 1:
                raise RuntimeError(f"the hand-written saga {saga_id} was moved elsewhere")

    def timed(write: Callable[[list[tuple[str, tuple[Any, ...]]]], int]) -> float:
        start = time.perf_counter()
        for n in range(count):
            saga(write, n)
        return count / (time.perf_counter() - start)

    if db.startswith("sqlite"):
        conn = sqlite3.connect(store.database.path, isolation_level=None)  # type: ignore[attr-defined]
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[db]}")

        def write_sqlite(statements: list[tuple[str, tuple[Any, ...]]]) -> int:
            conn.execute("BEGIN IMMEDIATE")
            counts = [conn.execute(sql, params).rowcount for sql, params in statements]
            conn.execute("COMMIT")
            return counts[1]

        try:
            return timed(write_sqlite)
        finally:
            conn.close()
    # As tidings does on PostgreSQL: the saga's move and its transitions in one statement
    # (one round trip), the transitions inserted only if the move found its version.
    moved_and_recorded = (
        f"WITH moved AS ({move} RETURNING 1) INSERT INTO {transitions} (saga_id, seq, sub,"
        " kind, step, at, detail, by_whom, amount) SELECT v.* FROM (VALUES"
        " (%s, %s, 0, %s, %s, %s::float8, '', '', 0::float8),"
        " (%s, %s, 1, %s, %s, %s::float8, '', '', 0::float8)) AS v"
        " WHERE EXISTS (SELECT 1 FROM moved)"
    )
    made_and_recorded = moved_and_recorded.replace(f"{move} RETURNING", f"{insert_saga} RETURNING")
    with psycopg.connect(store.database.url) as pg:  # type: ignore[attr-defined]

        def write_pg(statements: list[tuple[str, tuple[Any, ...]]]) -> int:
            if len(statements) == 3:  # a step: its row, then the move with its transitions
                pg.execute(*statements[0])
                both = pg.execute(moved_and_recorded, statements[1][1] + statements[2][1])
            else:  # the saga's row with its first transitions
                both = pg.execute(made_and_recorded, statements[0][1] + statements[1][1])
            pg.commit()
            return 1 if both.rowcount == 2 else 0

        return timed(write_pg)


def chain_rate(store: tidings.Store, effects: str, count: int) -> float:
    """Chains/s: the same four functions in one unit of work, ``count`` times."""
    chain = [step_writing(effects, name) for name in STEPS]
    start = time.perf_counter()
    for n in range(count):
        with store.unit_of_work() as uow:
            data: dict[str, Any] = {"n": n}
            for act in chain:
                data.update(act(ChainContext(data, uow)))
    return count / (time.perf_counter() - start)


def measure(db: str, count: int, runs: int, seconds: float) -> dict[str, Any]:
    """Median raw commits/s, sagas/s and chains/s on ``db``, the commits per saga, and the
    median of each run's ratios. The raw loop runs before and after the sagas of its run
    (their mean is the run's raw figure): a disk shared with other work changes speed
    from one minute to the next, and a ratio is fair only within one stretch of time."""
    raw, sagas, chains = Series(f"{db} raw"), Series(f"{db} sagas"), Series(f"{db} chain")
    hands, to_hand = Series(f"{db} hand-written"), Series(f"{db} sagas / hand-written")
    hand_to_bound = Series(f"{db} hand-written / bound")
    to_bound, to_chain = Series(f"{db} sagas / bound"), Series(f"{db} chain / sagas")
    commits = 0
    for _ in range(runs):
        with place(db) as (url, schema):
            before = raw_commits(db, url, schema, seconds / 2)
            store, effects = open_store(db, url, schema)
            try:
                rate, commits = saga_rate(store, effects, count)
                hand = hand_written_rate(db, store, effects, count)
                chain = chain_rate(store, effects, count)
            finally:
                store.close()
            limit = (before + raw_commits(db, url, schema, seconds / 2)) / 2
        raw.add(limit)
        sagas.add(rate)
        chains.add(chain)
        to_bound.add(rate / (limit / commits))
        hands.add(hand)
        to_hand.add(rate / hand)
        hand_to_bound.add(hand / (limit / commits))
        to_chain.add(chain / rate)
    for series in (raw, sagas, hands, chains):
        print(f"  {series.name}: {series.spread()} /s ({load()})")
    ratios = " / ".join(f"{v:.2f}" for v in to_bound.values)
    print(f"  {db} sagas / bound, per run: {ratios}")
    return {
        "raw": raw,
        "sagas": sagas,
        "chain": chains,
        "commits": commits,
        "to_bound": to_bound,
        "to_chain": to_chain,
        "hand": hands,
        "to_hand": to_hand,
        "hand_to_bound": hand_to_bound,
    }


def profile(db: str, count: int) -> None:
    """The saga loop under cProfile: the 25 functions with the most cumulative time."""
    with place(db) as (url, schema):
        store, effects = open_store(db, url, schema)
        try:
            profiler = cProfile.Profile()
            profiler.enable()
            saga_rate(store, effects, count)
            profiler.disable()
        finally:
            store.close()
    print(f"\ncProfile of {count} sagas on {db} (cumulative)\n")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def print_tables(found: dict[str, dict[str, Any]]) -> None:
    """Sagas/s beside the bound and the bare chain, with ratios and the target."""
    rows, costs = [], []
    for db, m in found.items():
        raw, sagas, chain = m["raw"].median, m["sagas"].median, m["chain"].median
        bound, ratio = raw / m["commits"], m["to_bound"].median
        rows.append(
            [
                db,
                per_second(raw),
                str(m["commits"]),
                per_second(bound),
                per_second(sagas),
                f"{ratio:.2f}",
                f">= {TARGET}: {verdict(ratio >= TARGET)}",
                per_second(m["hand"].median),
                f"{m['hand_to_bound'].median:.2f}",
                f"{m['to_hand'].median:.2f}",
            ]
        )
        per_step = (1 / sagas - 1 / chain) / len(STEPS)
        costs.append(
            [
                db,
                per_second(chain),
                f"{1e3 / chain:.3f}",
                f"{1e3 / sagas:.3f}",
                f"{per_step * 1e3:.3f}",
                f"{m['to_chain'].median:.1f}",
            ]
        )
    print("\nSagas of 4 local steps per second, one after another (median of runs;")
    print("÷ bound and saga ÷ chain: the median of each run's own ratio)\n")
    header = [
        *("database", "raw commits/s", "commits/saga", "bound", "sagas/s", "÷ bound", "target"),
        *("hand-written/s", "hand ÷ bound", "sagas ÷ hand"),
    ]
    print(table(header, rows))
    print("\nAgainst a bare chain of the same four functions in one transaction\n")
    header = ["database", "chains/s", "ms/chain", "ms/saga", "overhead ms/step", "saga ÷ chain"]
    print(table(header, costs))
    print(
        "\nbound = raw commits/s ÷ commits/saga: a saga of four steps commits 5 times (1 to"
        "\nrecord it with the first step's 'started', then 1 per step: its effect, 'succeeded'"
        "\nand the next 'started' or the saga's end); it cannot go faster than the database"
        "\ncommits one after another."
        "\nhand-written: the raw driver doing the same commits with the same rows (the step's"
        "\nrow, the saga's row moved at its version, two transitions), without orchestration:"
        "\nwhat the design's writes alone allow against one-row commits."
    )
    opened = ", ".join(f"{db} {n:g}" for db, n in TRANSACTIONS.items())
    print(f"Transactions the orchestrator opened per saga (the writes, and reads): {opened}")
    sent = ", ".join(f"{db} {n:g}" for db, n in STATEMENTS.items())
    print(
        f"Statements per saga, BEGIN and COMMIT included: {sent}; the raw loop sends 3 per"
        " commit (BEGIN, INSERT, COMMIT), 15 for the commits of one saga"
    )


def main() -> None:
    """Measure SQLite and PostgreSQL and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=500, help="sagas per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--seconds", type=float, default=3.0, help="raw commit loop length")
    parser.add_argument("--profile", choices=DATABASES, default=None)
    args = parser.parse_args()
    print(f"Sagas benchmark: {args.sagas} sagas x {args.runs} runs ({load()})")
    found = {db: measure(db, args.sagas, args.runs, args.seconds) for db in DATABASES}
    print_tables(found)
    if args.profile:
        profile(args.profile, args.sagas)


if __name__ == "__main__":
    main()

"""The relay's claim on PostgreSQL walks the backlog's head in position order: it never
reads and sorts the whole backlog, whichever lanes the relay holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

import tidings
from tidings.records import EventRecord

pytestmark = pytest.mark.postgres
BACKLOG = 20_000
LANES = 8


@pytest.fixture
def store(pg_url: str, schema: str) -> Iterator[tidings.Store]:
    """A store whose outbox holds a backlog over many aggregates, its statistics fresh."""
    with tidings.connect(pg_url, schema=schema, outbox=True) as store:
        outbox = store.outbox
        assert outbox is not None
        now = datetime.now(UTC)
        records = [
            EventRecord(
                str(uuid.uuid4()), f"order-{i % 4000}", i // 4000 + 1, "OrderPlaced", 1, now, b"{}"
            )
            for i in range(BACKLOG)
        ]
        with store.database.transaction() as tx:
            outbox.write(tx, records)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {store.database.tables['outbox']}")  # type: ignore[attr-defined]
        yield store


def claim_plan(store: tidings.Store, pg_url: str, held: int, skip: int = 0) -> str:
    """The plan PostgreSQL picks for the claim of a relay holding ``held`` lanes, told to
    step over the first ``skip`` rows of the backlog (still settling)."""
    outbox: Any = store.outbox
    leases = dict.fromkeys(range(held), 1)
    settling = [e.record.position for e in outbox.claim(leases, LANES, skip, time.time())]
    with captured_claim(outbox) as seen:
        claimed = outbox.claim(leases, LANES, 2000, time.time(), settling)
    assert len(claimed) == 2000
    assert not {e.record.position for e in claimed} & set(settling)
    return explained(outbox, seen)


@contextmanager
def captured_claim(outbox: Any) -> Iterator[dict[str, Any]]:
    """The statement and parameters of the claims made in the block."""
    seen: dict[str, Any] = {}
    read = outbox._claim_rows

    def capture(sql: str, params: Any) -> Any:
        seen["sql"], seen["params"] = sql, params
        return read(sql, params)

    outbox._claim_rows = capture
    try:
        yield seen
    finally:
        del outbox._claim_rows


def explained(outbox: Any, seen: dict[str, Any], *, analyze: bool = False) -> str:
    """The plan of the captured claim, on the connection the claim runs on."""
    explain = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
    rows = outbox._claim_rows(explain + seen["sql"], seen["params"])
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("held", [LANES, 3, 1])
def test_the_claim_reads_the_head_of_the_backlog_by_index(
    store: tidings.Store, pg_url: str, held: int
) -> None:
    plan = claim_plan(store, pg_url, held)
    outbox = store.database.tables["outbox_bare"]  # type: ignore[attr-defined]
    assert f"Seq Scan on {outbox} o" not in plan, plan
    assert "Sort" not in plan, plan


def test_rows_still_settling_are_looked_up_in_a_hash_not_a_list(
    store: tidings.Store, pg_url: str
) -> None:
    """A claim that steps over 2,500 rows checks each row it reads against a hash of them,
    built once: compared with the list element by element, as ``NOT (position =
    ANY(array))`` is in a prepared statement, the claim took 50-77 ms instead of 20."""
    plan = claim_plan(store, pg_url, LANES, skip=2500)
    assert "NOT (hashed SubPlan" in plan, plan
    assert "Sort" not in plan, plan


def test_a_steady_flow_on_a_new_outbox_is_claimed_by_an_index_walk(
    pg_url: str, schema: str
) -> None:
    """A new outbox has no statistics: the planner expects thousands of due rows where a
    steady flow leaves a few, and plans the claim as a bitmap scan and a sort, which
    reads the index entry of every row published since the last VACUUM on every claim
    (only a plain index scan marks them dead). The claim's own connection walks the
    position index instead, and its reads do not grow with the rows published."""
    with tidings.connect(pg_url, schema=schema, outbox=True) as store:
        outbox: Any = store.outbox
        table = store.database.tables["outbox"]  # type: ignore[attr-defined]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        now = datetime.now(UTC)
        for start in range(0, 5000, 500):  # published as they come, a few always due
            with store.database.transaction() as tx:
                outbox.write(tx, [placed(f"order-{i}", now) for i in range(start, start + 500)])
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(
                    f"UPDATE {table} SET published = TRUE WHERE NOT published "
                    f"AND position <= (SELECT max(position) - 5 FROM {table})"
                )
        with captured_claim(outbox) as seen:
            claimed = outbox.claim(dict.fromkeys(range(LANES), 1), LANES, 2000, time.time())
        assert len(claimed) == 5
        with psycopg.connect(pg_url, autocommit=True) as conn:  # the planner left alone
            elsewhere = conn.execute("EXPLAIN " + seen["sql"], seen["params"]).fetchall()
        bare = store.database.tables["outbox_bare"]  # type: ignore[attr-defined]
        hazard = "\n".join(row[0] for row in elsewhere)
        assert f"Bitmap Heap Scan on {bare} o" in hazard or f"Seq Scan on {bare} o" in hazard
        plan = explained(outbox, seen, analyze=True)
        assert f"Index Scan using {bare}_unpublished on {bare} o" in plan, plan
        assert "Bitmap" not in plan, plan
        assert "Seq Scan on" not in plan.split("SubPlan")[0], plan


def placed(order: str, at: datetime) -> EventRecord:
    """The first event of ``order``."""
    return EventRecord(str(uuid.uuid4()), order, 1, "OrderPlaced", 1, at, b"{}")

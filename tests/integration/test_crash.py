"""Kill a writing process with SIGKILL, again and again: state and events stay one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import tidings
from tidings.examples.shop.orders import SHOP_EVENTS
from tidings.examples.shop.repository import ORDERS_DDL

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 6


def kill_repeatedly(args: list[str], published: Path) -> None:
    """Start the writer, let it commit for a random while, SIGKILL it; KILLS times."""
    rng = random.Random(11)
    for _ in range(KILLS):
        before = published.stat().st_size if published.exists() else 0
        proc = subprocess.Popen([sys.executable, str(WRITER), *args])
        deadline = time.monotonic() + 30
        while (published.stat().st_size if published.exists() else 0) == before:
            assert proc.poll() is None, "the writer exited on its own"
            assert time.monotonic() < deadline, "the writer committed nothing in 30 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def check(store: tidings.Store, published: Path, order_ids: set[str]) -> None:
    """No phantom effect, and every order row has its event and every event its row.

    The events are read from the table itself: the question is what committed, and the
    writer is dead. (The gap-aware ``read_all`` may stop early on PostgreSQL at a hole the
    killed writer left while another client's transaction on the cluster is older than
    the hole's bound; that is read_all's own guarantee, tested in test_postgres.py.)
    """
    effects = set(published.read_text().split())
    # A plain SELECT, not the gap-aware log reader: that one rightly stops at the position
    # of a killed writer's transaction until PostgreSQL has noticed the dead connection.
    table = store.database.tables["events"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        log = uow.execute(f"SELECT event_id, stream_id, version FROM {table}").fetchall()
    assert effects, "no effect was recorded at all"
    assert effects <= {event_id for event_id, _, _ in log}, "an effect for an uncommitted event"
    assert {stream for _, stream, _ in log} == order_ids
    assert {version for _, _, version in log} == {1}
    assert len(log) == len(order_ids)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_sigkill_mid_flow_never_splits_state_from_events(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Six SIGKILLs at random moments: no phantom effects, rows and events always match."""
    published = tmp_path / "published.txt"
    if backend == "sqlite":
        url, extra = f"sqlite:///{tmp_path / 'crash.db'}", []
    else:
        url = request.getfixturevalue("pg_url")
        extra = [f"t_{uuid.uuid4().hex[:12]}"]
    store = tidings.connect(
        url, registry=tidings.EventRegistry(SHOP_EVENTS), **({"schema": extra[0]} if extra else {})
    )
    table = "shop_orders" if backend == "sqlite" else f"{extra[0]}.shop_orders"
    with store.unit_of_work() as uow:
        uow.execute(ORDERS_DDL.replace("shop_orders", table))
    if extra:  # the writer's unqualified table name must resolve to the test's schema
        url = f"{url}?options=-csearch_path%3D{extra[0]}"
    try:
        kill_repeatedly([url, str(published), *extra], published)
        with store.unit_of_work() as uow:
            ids = {row[0] for row in uow.execute(f"SELECT order_id FROM {table}").fetchall()}
        check(store, published, ids)
    finally:
        store.close()
        if extra:
            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {extra[0]} CASCADE")

"""The metrics port of ``tidings relay`` and ``tidings consume`` as processes, and
``tidings status``: scraped over HTTP and parsed by prometheus-client's own parser."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue
from tidings.examples.shop.orders import SHOP_EVENTS
from tidings.ports import OUTBOX_LANES

from ..contract.test_metrics import place_orders
from .test_cli_workers import Broker, broker, start, stop, wait_until_subscribed

__all__ = ["broker"]  # the fixture, used by name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """GET a path of a worker's metrics port: (status, body); (0, why) while it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def scrape(port: int) -> dict[str, float]:
    """Samples of a worker's /metrics without labels, parsed by prometheus-client."""
    code, text = get(port, "/metrics")
    if code != 200:
        return {}
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def wait_for(what: str, check: object, process: subprocess.Popen[str], seconds: float = 60):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it is truthy; fail if the worker exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()  # type: ignore[operator]
        if found:
            return found
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the worker exited ({process.returncode}) before {what}\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def status(db: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", "status", "--db", db, *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_relay_and_consumer_run_scraped_agrees_with_the_databases(
    tmp_path: Path, broker: Broker
) -> None:
    """Twenty orders through a real broker: the relay's /metrics says 20 published, as
    many acks timed, and a backlog that fell to 0; the consumer's says 20 received and
    handled, as its inbox does; both are healthy and ready, and ``tidings status`` lists
    them alive."""
    orders_url = f"sqlite:///{tmp_path / 'orders.db'}"
    inventory_url = f"sqlite:///{tmp_path / 'inventory.db'}"
    with tidings.connect(orders_url, registry=tidings.EventRegistry(SHOP_EVENTS), outbox=True) as o:
        place_orders(o, 20)
    relay_port, consumer_port = free_port(), free_port()
    queue = f"inventory-{uuid.uuid4().hex[:6]}"
    consumer = start(
        "consume", "--db", inventory_url, "--from", broker.url, "--name", queue,
        "--handlers", "tidings.examples.shop.inventory:handlers",
        "--metrics-port", str(consumer_port), *broker.consumer_options,
    )  # fmt: skip
    wait_until_subscribed(broker, queue, consumer)
    relay = start(
        "relay", "--db", orders_url, "--to", broker.url, "--source", "shop",
        "--metrics-port", str(relay_port), *broker.relay_options,
    )  # fmt: skip
    try:
        wait_for(
            "20 published",
            lambda: scrape(relay_port).get("tidings_relay_published_total") == 20,
            relay,
        )
        wait_for(
            "20 received",
            lambda: scrape(consumer_port).get("tidings_consumer_received_total") == 20,
            consumer,
        )
        relay_figures, consumer_figures = scrape(relay_port), scrape(consumer_port)
        readiness = [get(p, "/readyz") for p in (relay_port, consumer_port)]
        health = [get(p, "/healthz")[0] for p in (relay_port, consumer_port)]
        seen = json.loads(status(orders_url, "--json").stdout)
        seen_consumer = json.loads(status(inventory_url, "--json").stdout)
    finally:
        relay_output, consumer_output = stop(relay)[1], stop(consumer)[1]
    with tidings.connect(orders_url) as o, tidings.connect(inventory_url) as i:
        published = o.database.query("SELECT count(*) FROM tidings_outbox WHERE published")[0][0]
        processed = i.database.query(
            "SELECT count(*) FROM tidings_inbox WHERE status = 'processed'"
        )[0][0]
    assert relay_figures["tidings_relay_published_total"] == published == 20, relay_output
    assert relay_figures["tidings_relay_commit_to_ack_seconds_count"] == 20
    assert relay_figures["tidings_outbox_backlog"] == 0
    assert consumer_figures["tidings_consumer_applied_total"] == processed == 20, consumer_output
    assert health == [200, 200]
    assert [code for code, _ in readiness] == [200, 200], readiness
    assert [w["kind"] for w in seen["workers"]] == ["relay"]
    assert [len(seen["relays"]), seen["relays"][0]["lanes"]] == [1, 8]
    assert [w["name"] for w in seen_consumer["workers"]] == [queue]


@pytest.mark.nats
def test_readyz_turns_not_ready_when_the_relay_loses_its_lanes(
    tmp_path: Path, nats_url: str
) -> None:
    """A relay whose lanes another owner took over (their leases held far ahead) answers
    503 on /readyz within a lease, naming the lanes; /healthz stays 200."""
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    port = free_port()
    relay = start("relay", "--db", url, "--to", nats_url, "--metrics-port", str(port))
    try:
        wait_for("ready", lambda: get(port, "/readyz")[0] == 200, relay)
        with tidings.connect(url, outbox=True) as store, store.database.transaction() as tx:
            tx.execute(
                f"UPDATE {store.database.tables['leases']} SET owner = 'another-relay', "
                "token = token + 1, lease_until = ? WHERE name = ?",
                (time.time() + 3600, OUTBOX_LANES),
            )
        _code, body = wait_for(
            "not ready", lambda: (a := get(port, "/readyz"))[0] == 503 and a, relay, 15
        )
        healthy = get(port, "/healthz")[0]
    finally:
        stop(relay)
    assert "holds no outbox lane" in body
    assert healthy == 200


@pytest.mark.postgres
@pytest.mark.nats
def test_readyz_turns_not_ready_when_the_relay_database_is_gone(nats_url: str) -> None:
    """A relay whose PostgreSQL database was dropped under it answers 503 on /readyz,
    saying it cannot reach it."""
    import psycopg

    from ..conftest import PG_ADMIN_URL

    name = f"tidings_ready_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    relay = start("relay", "--db", url, "--to", nats_url, "--metrics-port", str(port))
    try:
        wait_for("ready", lambda: get(port, "/readyz")[0] == 200, relay)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        _code, body = wait_for(
            "not ready", lambda: (a := get(port, "/readyz"))[0] == 503 and a, relay, 30
        )
    finally:
        stop(relay)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert "cannot reach PostgreSQL" in body


def test_status_check_fails_on_dead_letters_and_json_says_why(tmp_path: Path) -> None:
    """``tidings status --check`` exits 0 on a quiet service and 1 once an event is a dead
    letter; ``--json`` carries the figures and the problem."""
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    with tidings.connect(url, registry=tidings.EventRegistry(SHOP_EVENTS), outbox=True) as store:
        quiet = status(url, "--check")
        place_orders(store, 1)
        relay = store.relay(MemoryPublisher(MemoryQueue(), max_message_bytes=1), max_attempts=1)
        relay.drain()
        relay.release()
    failing = status(url, "--check")
    found = json.loads(status(url, "--json").stdout)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert failing.returncode == 1
    assert "1 outbox dead letter(s)" in failing.stdout
    assert found["outbox"]["dead_letters"] == 1
    assert found["problems"] == ["1 outbox dead letter(s): tidings outbox dead-letters"]


WORKERS = """
from tidings.application.projections import Projection
from tidings.domain.saga import SagaDefinition, Step
from tidings.testing.contract import Counted

projections = [Projection("metrics-seen", {Counted: lambda uow, e: None})]
sagas = [SagaDefinition("metrics-saga", [Step("only", lambda ctx: None)])]
"""


@pytest.mark.parametrize(
    ("command", "counter"),
    [
        pytest.param(
            ["projections", "run", "--projections", "metrics_workers:projections"],
            "tidings_projection_events_applied_total",
            id="projections",
        ),
        pytest.param(
            ["sagas", "run", "--definitions", "metrics_workers:sagas"],
            "tidings_saga_transitions_total",
            id="sagas",
        ),
    ],
)
def test_the_saga_worker_and_the_projection_runner_serve_their_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], counter: str
) -> None:
    """``tidings sagas run`` and ``tidings projections run`` with --metrics-port: ready,
    their own counter and the database's gauges on /metrics, a heartbeat in status."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics_workers.py").write_text(WORKERS)
    db = f"sqlite:///{tmp_path / 'w.db'}"
    port = free_port()
    worker = start(*command[:2], "--db", db, *command[2:], "--metrics-port", str(port))
    try:
        wait_for("ready", lambda: get(port, "/readyz")[0] == 200, worker)
        found = wait_for("scraped", lambda: scrape(port), worker)
        seen = json.loads(status(db, "--json").stdout)
    finally:
        code, output = stop(worker)
    assert code == 0, output
    assert counter in found
    assert found["tidings_database_up"] == 1
    assert len(seen["workers"]) == 1

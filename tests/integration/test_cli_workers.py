"""``tidings relay`` and ``tidings consume`` as processes: Orders -> broker -> Inventory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidings
from tidings.examples.shop.inventory import stock
from tidings.examples.shop.orders import SHOP_EVENTS, Order

from .brokers import NatsHarness, RabbitHarness


def start(*args: str) -> subprocess.Popen[str]:
    """``python -m tidings ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "tidings", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit code and what it printed."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    return process.returncode, out + err


@pytest.fixture(
    params=[
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str], list[str]]]:
    """(URL, relay options, consumer options) on fresh topology, removed afterwards."""
    if request.param == "nats":
        nats = NatsHarness(request.getfixturevalue("nats_url"))
        shared = ["-o", f"stream={nats.stream}", "-o", f"subject_prefix={nats.prefix}"]
        yield nats.url, shared, shared
        nats.cleanup()
    else:
        rabbit = RabbitHarness(request.getfixturevalue("rabbitmq_url"), queue_type="classic")
        exchange = ["-o", f"exchange={rabbit.exchange}"]
        yield (
            rabbit.url,
            exchange,
            [*exchange, "-o", "binding_keys=#", "-o", "queue_type=classic"],
        )
        rabbit.cleanup()


def test_orders_flow_through_relay_and_consumer_and_both_stop_cleanly(
    tmp_path: Path, broker: tuple[str, list[str], list[str]]
) -> None:
    """Thirty orders placed before the workers start reach Inventory's stock exactly; on
    SIGTERM both finish their batch and exit 0."""
    url, relay_options, consumer_options = broker
    orders_db, inventory_db = tmp_path / "orders.db", tmp_path / "inventory.db"
    with tidings.connect(
        f"sqlite:///{orders_db}", registry=tidings.EventRegistry(SHOP_EVENTS), outbox=True
    ) as orders:
        for _ in range(30):
            order = Order(f"o-{uuid.uuid4().hex[:8]}", "c@example.com")
            order.add_line("BOOK-42", 1, 1_000)
            order.place()
            with orders.unit_of_work() as uow:
                uow.track(order)
    queue = f"inventory-{uuid.uuid4().hex[:6]}"
    consumer = start(
        "consume",
        "--db",
        f"sqlite:///{inventory_db}",
        "--from",
        url,
        "--name",
        queue,
        "--handlers",
        "tidings.examples.shop.inventory:handlers",
        "--every",
        "1",
        *consumer_options,
    )
    time.sleep(2)  # the consumer declares its queue before the relay publishes
    relay = start(
        "relay",
        "--db",
        f"sqlite:///{orders_db}",
        "--to",
        url,
        "--source",
        "shop",
        "--every",
        "1",
        *relay_options,
    )
    try:
        on_hand = 100
        deadline = time.monotonic() + 60
        while on_hand != 70 and time.monotonic() < deadline:
            time.sleep(0.2)
            if inventory_db.exists():
                with (
                    tidings.connect(f"sqlite:///{inventory_db}") as inventory,
                    inventory.unit_of_work() as uow,
                ):
                    on_hand = stock(uow, "BOOK-42")
    finally:
        relay_code, relay_output = stop(relay)
        consumer_code, consumer_output = stop(consumer)
    assert on_hand == 70, relay_output + consumer_output
    assert (relay_code, consumer_code) == (0, 0), relay_output + consumer_output
    assert "SIGTERM: finishing the batch in hand" in relay_output
    assert "published 30" in relay_output
    assert "applied 30" in consumer_output

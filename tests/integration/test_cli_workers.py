"""``tidings relay`` and ``tidings consume`` as processes: Orders -> broker -> Inventory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from nats.js import JetStreamContext

import tidings
from tidings.examples.shop.inventory import stock
from tidings.examples.shop.orders import SHOP_EVENTS, Order

from .brokers import NatsHarness, RabbitHarness, run_nats


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


@dataclass
class Broker:
    """A broker's URL, the workers' options for fresh topology on it, and how to tell
    that a consumer of a given name is subscribed."""

    url: str
    relay_options: list[str]
    consumer_options: list[str]
    subscribed: Callable[[str], bool]


def rabbit_queue_consumed(url: str, queue: str) -> bool:
    """True once ``queue`` exists and has a consumer (which binds it before consuming)."""
    import pika
    import pika.exceptions

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return bool(declared.method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
        return False
    finally:
        connection.close()


def delete_queue(url: str, queue: str) -> None:
    """Delete ``queue`` if it is there."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


def nats_consumer_made(harness: NatsHarness, durable: str) -> bool:
    """True once the durable consumer ``durable`` exists on the harness's stream."""
    from nats.js.errors import NotFoundError

    found: list[bool] = []

    async def ask(js: JetStreamContext) -> None:
        try:
            await js.consumer_info(harness.stream, durable)
            found.append(True)
        except NotFoundError:
            pass

    run_nats(harness.url, ask)
    return bool(found)


@pytest.fixture(
    params=[
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Fresh topology for the workers, removed afterwards."""
    if request.param == "nats":
        nats = NatsHarness(request.getfixturevalue("nats_url"))
        shared = ["-o", f"stream={nats.stream}", "-o", f"subject_prefix={nats.prefix}"]
        yield Broker(nats.url, shared, shared, partial(nats_consumer_made, nats))
        nats.cleanup()  # the stream, with its consumers
    else:
        rabbit = RabbitHarness(request.getfixturevalue("rabbitmq_url"), queue_type="classic")
        exchange = ["-o", f"exchange={rabbit.exchange}"]
        asked: list[str] = []

        def subscribed(queue: str) -> bool:
            asked.append(queue)
            return rabbit_queue_consumed(rabbit.url, queue)

        yield Broker(
            rabbit.url,
            exchange,
            [*exchange, "-o", "binding_keys=#", "-o", "queue_type=classic"],
            subscribed,
        )
        for queue in set(asked):
            delete_queue(rabbit.url, queue)
        rabbit.cleanup()


def partition_names(broker: Broker, name: str, partitions: int | None) -> list[str]:
    """The queues (RabbitMQ) or durable consumers (NATS) a consumer ``name`` reads."""
    if partitions is None:
        return [name]
    between = "-" if broker.url.startswith("nats") else "."
    return [f"{name}{between}{part}" for part in range(partitions)]


def wait_until_subscribed(broker: Broker, name: str, consumer: subprocess.Popen[str]) -> None:
    """Poll until the consumer ``name`` is subscribed; fail if it exits or 60 s pass."""
    deadline = time.monotonic() + 60
    while not broker.subscribed(name):
        if consumer.poll() is not None:
            out, err = consumer.communicate()
            pytest.fail(
                f"the consumer exited ({consumer.returncode}) before it subscribed\n{out}{err}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"the consumer {name} did not subscribe within 60 s")
        time.sleep(0.1)


@pytest.mark.parametrize("partitions", [None, 3], ids=["unpartitioned", "3-partitions"])
def test_orders_flow_through_relay_and_consumer_and_both_stop_cleanly(
    tmp_path: Path, broker: Broker, partitions: int | None
) -> None:
    """Thirty orders placed before the workers start reach Inventory's stock exactly; on
    SIGTERM both finish their batch and exit 0. With ``--partitions 3`` on both, the
    relay publishes into three partitions and the consumer subscribes to each."""
    parts = [] if partitions is None else ["--partitions", str(partitions)]
    url = broker.url
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
        *broker.consumer_options,
        *parts,
    )
    for name in partition_names(broker, queue, partitions):
        wait_until_subscribed(broker, name, consumer)  # before the relay publishes
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
        *broker.relay_options,
        *parts,
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

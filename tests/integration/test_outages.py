"""Broker outages: the adapters fail fast while a broker is down and carry on once it is back.

These tests stop a real server and start it again in a ``finally``; the suite runs
serially, so nothing else runs beside them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import NATS_START, reachable
from tests.integration.brokers import Harness, NatsHarness, RabbitHarness, event
from tidings import BrokerUnavailableError
from tidings.ports import IncomingMessage, OutgoingMessage, Subscription, Transport

pytestmark = pytest.mark.outage

T = TypeVar("T")
PATIENCE = 45.0  # seconds a broker may take to come back


def wait_until(check: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``check`` until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


def eventually(call: Callable[[], T], timeout: float = PATIENCE) -> T:
    """``call()`` once it stops raising BrokerUnavailableError (the broker is back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except BrokerUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def unavailable(call: Callable[[], object]) -> BrokerUnavailableError:
    """The BrokerUnavailableError ``call`` raises once the client noticed the outage."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            call()
        except BrokerUnavailableError as exc:
            return exc
        time.sleep(0.1)
    pytest.fail("the call kept working while the broker was down")


def rabbitmqctl(*arguments: str) -> str:
    """Run ``rabbitmqctl <arguments>``; what it printed."""
    tool = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run(
        [tool, *arguments], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


def nats_server_pid() -> int:
    """The process id of the nats-server that listens on port 4222."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"nats-server") and b"4222" in argv:
            return int(proc.name)
    pytest.fail("no nats-server with -p 4222 runs: cannot simulate its restart")


def publish_all(publisher: Transport, messages: list[OutgoingMessage]) -> None:
    """Publish until every message is confirmed (the broker may still be waking up)."""
    answers = eventually(lambda: publisher.publish(messages))
    assert answers == [None] * len(messages)


def receive(subscription: Subscription, count: int) -> list[IncomingMessage]:
    """Fetch and ack ``count`` messages, across reconnects."""
    received: list[IncomingMessage] = []
    deadline = time.monotonic() + PATIENCE
    while len(received) < count and time.monotonic() < deadline:
        wanted = count - len(received)
        batch = eventually(lambda: subscription.fetch(wanted, 0.5))  # noqa: B023 - called here
        subscription.ack(batch)
        received += batch
    return received


def outage_round_trip(
    harness: Harness, stop: Callable[[], None], start: Callable[[], None]
) -> None:
    """Confirmed before, unavailable during, reconnected after: nothing confirmed is lost."""
    publisher, subscription = harness.publisher(), harness.subscription()
    before = [event("order-1", v) for v in range(1, 11)]
    after = [event("order-1", v) for v in range(11, 21)]
    publish_all(publisher, before)
    consumed = receive(subscription, 5)
    try:
        stop()
        error = unavailable(lambda: publisher.publish([event("order-2", 1)]))
        assert "cannot be reached" in str(error)
        unavailable(lambda: subscription.fetch(1, 0.2))
    finally:
        start()
    publish_all(publisher, after)
    consumed += receive(subscription, 15)
    ids = [m.message_id for m in consumed]
    # At least once: what was confirmed arrives in order; a redelivered one may repeat.
    assert list(dict.fromkeys(ids)) == [m.message_id for m in before + after]


@pytest.mark.rabbitmq
def test_rabbitmq_stopped_and_started_again_loses_nothing_confirmed(rabbitmq_url: str) -> None:
    """stop_app: calls fail with BrokerUnavailableError; start_app: the next calls reconnect."""
    harness = RabbitHarness(rabbitmq_url)

    def start() -> None:
        rabbitmqctl("start_app")
        wait_until(lambda: reachable("127.0.0.1", 5672), "RabbitMQ listens again")

    try:
        outage_round_trip(harness, lambda: rabbitmqctl("stop_app"), start)
    finally:
        harness.cleanup()


@pytest.mark.nats
def test_nats_restarted_loses_nothing_acknowledged(nats_url: str) -> None:
    """A stopped server fails calls fast; after its restart the next calls reconnect."""
    harness = NatsHarness(nats_url)

    def stop() -> None:
        os.kill(nats_server_pid(), signal.SIGTERM)
        wait_until(lambda: not reachable("127.0.0.1", 4222), "nats-server has stopped")

    def start() -> None:
        subprocess.run(shlex.split(NATS_START), check=True, timeout=60)
        wait_until(lambda: reachable("127.0.0.1", 4222), "nats-server listens again")

    try:
        outage_round_trip(harness, stop, start)
    finally:
        harness.cleanup()

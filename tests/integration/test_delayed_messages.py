"""Delayed delivery in real time, across restarts of every process: a message due in a few
seconds waits in PostgreSQL while its writer is gone and its first relay is SIGKILLed,
and the next relay delivers it to NATS or RabbitMQ once due, never before."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tidings
from tidings import Message

from .faults import open_wire, start_relay, stop, wait_until

DELAY = 4.0  # seconds


@dataclass(frozen=True, kw_only=True)
class Remind(Message):
    """A reminder the saga of an order sets for itself."""

    order_id: str


@pytest.mark.postgres
@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_a_delayed_message_outlives_its_writer_and_a_killed_relay_and_comes_once_due(
    pg_url: str, schema: str, broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Sent with a delay, beside one sent at once: the first relay publishes only the
    immediate one and is killed before the other is due; a new relay publishes it after
    its time, once."""
    wire = open_wire(broker, request)
    try:
        registry = tidings.EventRegistry([Remind])
        writer = tidings.connect(pg_url, schema=schema, outbox=True, registry=registry)
        due = datetime.now(UTC) + timedelta(seconds=DELAY)
        with writer.unit_of_work() as uow:
            uow.send(Remind(order_id="o-1"), key="order-o-1", deliver_at=due)
            uow.send(Remind(order_id="o-now"), key="order-o-now")
        [later, now] = uow.sent
        writer.close()  # the writer's process is gone; the message waits in the database

        log = tmp_path / "relay.log"
        first = start_relay(pg_url, schema, wire, log, killed=True)
        wait_until(
            lambda: len(wire.received()) == 1, "the immediate message", alive=[first], log=log
        )
        assert [a.event_id for a in wire.received()] == [now.event_id]
        assert datetime.now(UTC) < due, "the machine was too slow to see the message wait"
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

        second = start_relay(pg_url, schema, wire, log)
        while datetime.now(UTC) < due - timedelta(seconds=0.5):
            assert len(wire.received()) == 1, "the delayed message came before its time"
            time.sleep(0.1)
        wait_until(
            lambda: len(wire.received()) == 2, "the delayed message", alive=[second], log=log
        )
        assert datetime.now(UTC) >= due
        assert [a.event_id for a in wire.received()] == [now.event_id, later.event_id]
        assert stop(second) == 0
    finally:
        wire.cleanup()

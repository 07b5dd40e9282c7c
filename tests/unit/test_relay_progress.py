"""The relay's progress line says when the broker stalls, not only that errors happened."""

from __future__ import annotations

import time

import tidings
from tidings.application.backoff import Backoff
from tidings.cli.workers import last_error, relay_status
from tidings.testing import RecordingTransport, plain_message
from tidings.testing.contract import Counted, Counter


def test_the_progress_line_names_a_broker_that_left_messages_unanswered() -> None:
    """A relay meeting a silent broker counts broker errors, no retries, and its progress
    line gives the gist of the last one."""
    store = tidings.connect("memory://", outbox=True, registry=tidings.EventRegistry([Counted]))
    counter = Counter("counter-1")
    counter.increment()
    with store.unit_of_work() as uow:
        uow.track(counter)
    transport = RecordingTransport(silent=lambda message: True)
    relay = store.relay(
        transport, plain_message, outage_backoff=Backoff(base=0.01, cap=0.02), idle_wait=0.01
    )
    relay.start()
    try:
        deadline = time.monotonic() + 30
        while relay.stats.broker_errors < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop()
    assert relay.stats.broker_errors >= 2, "the relay never met the silent broker twice"
    line = relay_status(relay)()
    assert "retried 0" in line
    assert "(last: the test broker left 1 messages unanswered)" in line


def test_the_gist_of_an_error_is_its_first_clause() -> None:
    """The details after the first parenthesis or sentence stay in RelayStats.last_error."""
    error = "RabbitMQ at 127.0.0.1:5672 cannot be reached (TimeoutError: no answer). Check the URL"
    assert last_error(error) == " (last: RabbitMQ at 127.0.0.1:5672 cannot be reached)"
    assert last_error("") == ""

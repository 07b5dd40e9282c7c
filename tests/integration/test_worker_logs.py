"""``--log-format json``: a worker writes one JSON object a line, which a log shipper can
read, with the event id, aggregate and trace id of the event a line is about."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pytest

import tidings
from tidings.testing.contract import Counted, Counter, new_id

from .brokers import unique
from .cli import run_cli

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def lines_of(stream: Any) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines a process writes to ``stream``, as they come, and the thread reading
    them (it ends when the process closes the stream)."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            found.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return found, reader


@pytest.mark.rabbitmq
def test_the_relay_logs_json_lines_with_the_event_it_is_about(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    """A relay whose broker refuses the event (no queue is bound to the exchange) logs
    the refusal as JSON with the event id, the aggregate and the event's trace id; every
    line it writes, its start and progress lines too, is one JSON object."""
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    exchange = unique("tidings-logs-")
    with tidings.connect(url, outbox=True, registry=tidings.EventRegistry([Counted])) as store:
        counter = Counter(new_id("cart"))
        counter.increment(1)
        with store.unit_of_work({"traceparent": TRACEPARENT}) as uow:
            uow.track(counter)
        event_id = uow.published[0].event_id
    relay = subprocess.Popen(
        [
            *(sys.executable, "-m", "tidings", "relay", "--db", url, "--to", rabbitmq_url),
            *("-o", f"exchange={exchange}", "--every", "0.2", "--log-format", "json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stderr is not None
        (lines, reader), seen = lines_of(relay.stderr), []
        deadline = time.monotonic() + 60
        while not any(line.get("event_id") == event_id for line in seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no log line about the refused event: {seen}"
            seen.append(json.loads(lines.get(timeout=remaining)))
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=60)
        with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
            connection.channel().exchange_delete(exchange)
    reader.join(10)
    while not lines.empty():
        seen.append(json.loads(lines.get()))
    assert relay.stdout is not None
    with relay.stdout, relay.stderr:
        assert relay.stdout.read() == ""
    [refused] = [line for line in seen if line.get("event_id") == event_id]
    assert refused["level"] == "WARNING"
    assert refused["logger"] == "tidings.relay"
    assert refused["aggregate"] == counter.id
    assert refused["trace_id"] == TRACE_ID
    assert "unroutable" in refused["message"]
    assert any(line["message"].startswith("relay ") for line in seen)  # the start line
    assert any(line["message"].startswith("published ") for line in seen)  # progress
    assert all({"time", "level", "logger", "message"} <= set(line) for line in seen)


@pytest.mark.parametrize(
    "command", [("relay",), ("consume",), ("sagas", "run"), ("projections", "run")]
)
def test_every_worker_takes_the_log_format_and_refuses_an_unknown_one(
    command: tuple[str, ...],
) -> None:
    """``--log-format`` is on every long-running worker; a format it does not know is
    refused before anything starts, naming the ones it knows."""
    done = run_cli(*command, "--db", "sqlite:///nowhere.db", "--log-format", "xml")
    assert done.returncode == 2
    assert "--log-format" in done.stderr
    assert "'text'" in done.stderr
    assert "'json'" in done.stderr

"""Commit -> broker acknowledgement latency of the relay at a steady rate of events.

Method: a writer commits one ``OrderPlaced`` per unit of work (event log + outbox row, and
on PostgreSQL the NOTIFY) at a steady rate and notes, per event id, the moment its
``with store.unit_of_work()`` block returned (the commit is done). The relay runs as it
does in production (``Relay.run``: woken by LISTEN/NOTIFY, the in-process signal or
``PRAGMA data_version``) with its transport wrapped in ``AckClock``, which notes the
moment ``publish`` returned with the broker's confirmation of each message. The latency
of an event is the difference; both clocks are ``time.perf_counter`` (CLOCK_MONOTONIC,
one clock for every process of the machine, so a writer in another process compares).
``publish`` returns when the last confirm of its wave arrived, so the figure is an upper
bound of each message's own confirm.

Where the writer runs matters: ``process`` is the usual deployment with PostgreSQL (the
application and ``tidings relay`` are separate processes); ``thread`` is a relay inside
the application (``relay.start()``), where writer and relay share one interpreter lock.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import tidings
from tidings.examples.shop.orders import SHOP_EVENTS, Order
from tidings.ports import OutgoingMessage, Transport
from tidings.serialization.registry import EventRegistry


class AckClock:
    """A transport that notes when each message's confirmation came back."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.acked: dict[str, float] = {}

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish through the real transport; note the return time of every confirm."""
        results = self.inner.publish(messages)
        now = time.perf_counter()
        for message, error in zip(messages, results, strict=True):
            if error is None:
                self.acked.setdefault(message.message_id, now)
        return results

    def close(self) -> None:
        """Close the real transport."""
        self.inner.close()


def open_store(url: str, schema: str) -> tidings.Store:
    """The shop's store with an outbox (what the writer and the relay both open)."""
    return tidings.connect(
        url, schema=schema, outbox=True, source="shop", registry=EventRegistry(SHOP_EVENTS)
    )


def write_steadily(
    store: tidings.Store, per_second: float, count: int, stop: threading.Event | None = None
) -> list[tuple[str, float]]:
    """Commit ``count`` orders (fewer if ``stop`` is set first), one per unit of work, at
    ``per_second``; (event id, commit time) each. A writer that falls behind catches up
    without sleeping."""
    committed: list[tuple[str, float]] = []
    run = uuid.uuid4().hex[:8]  # fresh aggregates in every run
    start = time.perf_counter()
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        pause = start + i / per_second - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        order = Order(f"order-{run}-{i}", "alice@example.com")
        order.add_line(f"sku-{i % 100}", 1, 3_900)
        order.place()
        with store.unit_of_work() as uow:
            uow.track(order)
        committed.append((uow.published[0].event_id, time.perf_counter()))
    return committed


def _writer_process(url: str, schema: str, per_second: float, count: int, out: Any) -> None:
    store = open_store(url, schema)
    try:
        out.put(write_steadily(store, per_second, count))
    finally:
        store.close()


def measure(
    url: str,
    schema: str,
    transport: Transport,
    *,
    per_second: float,
    seconds: float,
    writer: str,
    warmup: float = 0.0,
) -> list[float]:
    """Latencies (seconds) of every event a steady writer committed for ``seconds`` after
    ``warmup`` seconds whose events are relayed but not counted."""
    count = int(per_second * (seconds + warmup))
    store = open_store(url, schema)
    clock = AckClock(transport)
    relay = store.relay(clock)
    relay.start()
    try:
        if writer == "thread":  # the application's own store, as with relay.start()
            committed = write_steadily(store, per_second, count)
        else:
            committed = write_in_process(url, schema, per_second, count)
        deadline = time.monotonic() + 30
        while len(clock.acked) < count and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop()
        store.close()
    missing = [event_id for event_id, _ in committed if event_id not in clock.acked]
    assert not missing, f"{len(missing)} events never acknowledged"
    counted = committed[int(per_second * warmup) :]
    return [clock.acked[event_id] - at for event_id, at in counted]


def write_in_process(url: str, schema: str, per_second: float, count: int) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_writer_process, args=(url, schema, per_second, count, out))
    child.start()
    deadline = time.monotonic() + count / per_second + 60
    while time.monotonic() < deadline:
        try:
            committed: list[Any] = out.get(timeout=0.5)
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError("the writer process failed (see its traceback)") from None
            continue
        child.join()
        return committed
    child.kill()
    raise RuntimeError("the writer process did not finish in time")

"""What tracing costs the relay and the consumer, as ratios measured in one run.

    make bench-tracing                  # or: .venv/bin/python benchmarks/tracing.py
    .venv/bin/python benchmarks/tracing.py --events 20000 --messages 20000 --runs 3

Four modes, taken in turn within every run so that the machine's drift hits them alike:

- ``off``: as if opentelemetry-api were not installed (tidings never imports it);
- ``api``: the API installed and no SDK configured, the library default: no span is made;
- ``sdk``: the SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter
  that drops every span (the cost of making, ending and queueing the spans and carrying
  their context, not of shipping them), every trace sampled;
- ``sdk 10%``: the same with one trace in ten sampled where it began (a parent-based
  sampler, as production runs): the other spans are made but not recorded.

The relay drains a backlog of ``--events`` outbox rows from PostgreSQL and from SQLite to
NATS JetStream (``benchmarks/relay.py``'s drain), every event stored with the
``traceparent`` of a trace of its own, as one recorded in a traced request is. The
consumer takes ``--messages`` CloudEvents (each with a ``traceparent``) from NATS through
the inbox into PostgreSQL and SQLite (``benchmarks/consumer.py``'s handler). Each is
timed in wall time and in the CPU time of this process (all its threads) per event: on a
shared machine the CPU time is the steadier figure, and what tracing adds is CPU work. The
target: ``sdk`` at most 1.15 times ``off``'s CPU per event (15% cost), ``api`` within the
noise of ``off``. Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime

import consumer as consumer_bench
import relay as relay_bench
import relay_latency
import servers
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.util._once import Once
from report import Series, load, per_second, table

from tidings.observability import tracing
from tidings.records import EventRecord

MODES = ("off", "api", "sdk", "sdk 10%")
SAMPLED = {"sdk": 1.0, "sdk 10%": 0.1}  # the share of traces sampled where they began


class Dropping(SpanExporter):
    """An exporter that takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop the batch."""
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def switch(mode: str) -> Callable[[], None]:
    """Put tracing in ``mode``; return what ends it (the SDK's provider is shut down)."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    tracing._api, tracing._looked = None, mode == "off"  # "off": as if it were not installed
    if mode not in SAMPLED:
        return lambda: None
    # Parent-based: a span follows the sampled flag of the context its event was recorded
    # in; a root (a publish call mixing traces) is sampled at the same ratio.
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(SAMPLED[mode])))
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def traceparents(count: int, sampled: float) -> list[str]:
    """A context per event, each of a trace of its own (as recorded by as many commands),
    ``sampled`` of them with the sampled flag set."""
    step = round(1 / sampled) if sampled else 0
    return [
        f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{'01' if step and i % step == 0 else '00'}"
        for i in range(count)
    ]


def traced_backlog(count: int, aggregates: int, sampled: float) -> list[EventRecord]:
    """The relay benchmark's backlog, each event stored with a trace context."""
    records = relay_bench.backlog(count, aggregates)
    return [
        replace(r, metadata=json.dumps({"correlation_id": "c", "traceparent": t}).encode())
        for r, t in zip(records, traceparents(count, sampled), strict=True)
    ]


def traced_bodies(count: int, sampled: float) -> list[tuple[str, bytes]]:
    """The consumer benchmark's CloudEvents, each with a ``traceparent``."""
    bodies = consumer_bench.bodies(count)
    return [
        (i, body[:-1] + f',"traceparent":"{t}"}}'.encode())
        for (i, body), t in zip(bodies, traceparents(count, sampled), strict=True)
    ]


Figures = dict[tuple[str, str, str], tuple[Series, Series]]
"""Per (worker, database, mode): events/s of wall time, and CPU microseconds per event."""


def timed(count: int, work: Callable[[], object]) -> tuple[float, float]:
    """Events/s of wall time and CPU microseconds per event (every thread of this process)
    of ``work()`` handling ``count`` events. On a shared machine the CPU time is the
    steadier figure: what tracing adds is CPU work, and waiting for a busy core is not."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count * 1e6


def bare_spans(count: int) -> Callable[[], None]:
    """``count`` spans of the current SDK provider, each started and ended with nothing
    else: no parent, no attribute, never current. What one span costs in the SDK itself,
    the least a span per message can add to a consumer."""
    tracer = trace.get_tracer("bench")

    def make() -> None:
        for _ in range(count):
            tracer.start_span("bare", kind=trace.SpanKind.CONSUMER).end()

    return make


def measure(events: int, messages: int, runs: int) -> Figures:
    """Wall and CPU figures per (worker, database, mode)."""
    found: Figures = {}

    def add(key: tuple[str, str, str], figures: tuple[float, float]) -> None:
        wall, cpu = found.setdefault(key, (Series(key[2]), Series(key[2])))
        wall.add(figures[0])
        cpu.add(figures[1])

    with ExitStack() as stack:
        pg_url = stack.enter_context(servers.pg_database())
        schema = stack.enter_context(servers.pg_schema())
        sqlite_url = stack.enter_context(servers.sqlite_file())
        consumer_sqlite = stack.enter_context(servers.sqlite_file())
        place = stack.enter_context(servers.nats_stream())
        urls = {"postgresql": servers.PG_URL, "sqlite": sqlite_url}  # the relay's, in schema
        relay_stores = {
            db: stack.enter_context(relay_latency.open_store(url, schema))
            for db, url in urls.items()
        }
        setup = consumer_bench.Setup(pg_url, consumer_sqlite, place, None)  # type: ignore[arg-type]
        consumer_stores = {
            db: stack.enter_context(consumer_bench.open_store(setup, db)) for db in urls
        }
        relay_setup = relay_bench.Setup(servers.PG_URL, schema, sqlite_url, place, None)  # type: ignore[arg-type]
        for run in range(runs):
            first = run % len(MODES)
            for mode in MODES[first:] + MODES[:first]:  # each mode first in turn
                end, share = switch(mode), SAMPLED.get(mode, 1.0)
                try:
                    for db, store in relay_stores.items():
                        backlog = traced_backlog(events, max(events // 5, 1), share)
                        relay_bench.fill(store, backlog)
                        with relay_bench.transport_to("nats", relay_setup) as transport:
                            drain = functools.partial(relay_bench.drain, store, transport, events)
                            add(("relay", db, mode), timed(events, drain))
                    if mode in SAMPLED:
                        add(("span", "sdk", mode), timed(messages, bare_spans(messages)))
                    consumer_bench.fill_nats(place, traced_bodies(messages, share))
                    for db, store in consumer_stores.items():
                        consumer_bench.reset(store)
                        subscription = consumer_bench.subscription_of("nats", setup, "")
                        try:
                            take = functools.partial(
                                consumer_bench.consume, store, subscription, True, messages
                            )
                            add(("consumer", db, mode), timed(messages, take))
                        finally:
                            subscription.close()
                finally:
                    end()
            print(f"  run {run + 1}: {load()}")
    return found


def print_table(found: Figures) -> None:
    """Per mode: CPU microseconds per event and wall events/s (medians), each with its
    ratio to ``off``."""
    rows = []
    for worker in ("relay", "consumer"):
        for db in ("postgresql", "sqlite"):
            off_wall, off_cpu = (s.median for s in found[(worker, db, "off")])
            cells = [f"{worker}, {db} <-> nats"]
            for mode in MODES:
                wall, cpu = found[(worker, db, mode)]
                cells.append(
                    f"{cpu.median:.0f} us ({cpu.median / off_cpu:.2f}); "
                    f"{per_second(wall.median)} ({wall.median / off_wall:.2f})"
                )
            rows.append(cells)
    header = [
        "CPU per event (cost ratio); events/s (ratio)",
        "off",
        "api, no SDK",
        "SDK, all sampled",
        "SDK, 10% sampled",
    ]
    print(table(header, rows))
    print("target: SDK at most 1.15 of off's CPU per event (15% cost); api within noise")
    for mode in SAMPLED:
        span = found[("span", "sdk", mode)][1].median
        costs = ", ".join(
            f"{db} {span / found[('consumer', db, 'off')][1].median:.0%}"
            for db in ("postgresql", "sqlite")
        )
        print(
            f"the SDK's own span ({mode}: start and end, nothing else) takes {span:.1f} us"
            f" of CPU here: of the consumer's CPU per message with tracing off, {costs}"
        )
    print("SDK: a BatchSpanProcessor feeding an exporter that drops every span")
    for key, (wall, cpu) in sorted(found.items()):
        print(f"  {' '.join(key)}: {wall.spread()} events/s; {cpu.spread()} us CPU/event")


def main() -> None:
    """Measure every mode and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"tidings tracing benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    found = measure(args.events, args.messages, args.runs)
    print_table(found)
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()

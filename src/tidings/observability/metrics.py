"""Prometheus collectors for the workers and the database, read at scrape time.

The workers count in their own stats objects (``RelayStats``, ``ConsumerStats``, ...)
and in plain-Python buckets; a collector turns them into metric families only when
Prometheus scrapes, so the hot paths never call the metrics library, and nothing is
counted twice. The database's gauges (backlog, dead letters, sagas, projection lag) are
a few cheap queries made during the scrape, never by a loop while nobody scrapes.

In your own process, ``register(registry, store=..., relay=..., consumer=...)`` adds the
same collectors to your ``CollectorRegistry``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from tidings.domain.projection_state import PAUSED
from tidings.observability.buckets import Buckets
from tidings.observability.figures import Figures, ServiceFigures
from tidings.ports import OutboxEntry
from tidings.workers.consumer import Consumer
from tidings.workers.partitioned_consumer import PartitionedConsumer
from tidings.workers.relay import Relay
from tidings.workers.sagas import SagaWorker


class _WorkerCollector:
    """A worker's families, read from its stats when Prometheus scrapes."""

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name checks)."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families as of now."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        raise NotImplementedError


def _histogram(name: str, doc: str, label: str | None = None) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=[label] if label else None)


def _add(family: HistogramMetricFamily, labels: list[str], buckets: Buckets) -> None:
    family.add_metric(labels, buckets.cumulative(), buckets.total)


class RelayCollector(_WorkerCollector):
    """A relay's counters (from its ``RelayStats``) and how long events took from their
    commit to the broker's ack."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.commit_to_ack = Buckets()
        relay.on_acked = self.acked

    def acked(self, entries: Sequence[OutboxEntry], answers: Sequence[str | None]) -> None:
        """Count the ages of a group the broker acked (called once per group)."""
        now = time.time()
        self.commit_to_ack.add_many(
            now - e.record.occurred_at.timestamp()
            for e, answer in zip(entries, answers, strict=True)
            if answer is None
        )

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        s = self.relay.stats
        yield CounterMetricFamily(
            "tidings_relay_published",
            "Events the broker acknowledged (settled as published).",
            value=s.published if with_samples else None,
        )
        yield CounterMetricFamily(
            "tidings_relay_publish_failures",
            "Events the broker refused (each one retried later, or dead-lettered).",
            value=s.retried + s.dead_lettered if with_samples else None,
        )
        yield CounterMetricFamily(
            "tidings_relay_outages",
            "Pauses because the broker or the database did not answer.",
            value=s.broker_errors if with_samples else None,
        )
        yield GaugeMetricFamily(
            "tidings_relay_lanes_owned",
            "Outbox lanes this relay holds a lease on.",
            value=s.lanes_held if with_samples else None,
        )
        yield GaugeMetricFamily(
            "tidings_relay_paused",
            "1 while the relay is paused on an outage, else 0.",
            value=(1 if s.outage else 0) if with_samples else None,
        )
        ack = _histogram(
            "tidings_relay_commit_to_ack_seconds",
            "Seconds from an event's recording to the broker's ack of it.",
        )
        if with_samples:
            _add(ack, [], self.commit_to_ack)
        yield ack


class HandlerTimes:
    """Each handler's running time and failed attempts (an ``InboxProcessor``'s
    ``observer``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, Buckets] = {}
        self.failures: dict[str, int] = {}

    def handled(self, handler: str, seconds: float) -> None:
        """Count one run of ``handler``."""
        buckets = self.seconds.get(handler)
        if buckets is None:
            buckets = self.seconds[handler] = Buckets()
        buckets.add(seconds)

    def failed(self, handler: str) -> None:
        """Count one failed attempt of ``handler``."""
        self.failures[handler] = self.failures.get(handler, 0) + 1


class ConsumerCollector(_WorkerCollector):
    """A consumer's counters (from its ``ConsumerStats``) and its handlers' times. A
    ``PartitionedConsumer`` gives its counters added up over its partitions; its
    partitions' handlers are not timed (each partition has a processor of its own)."""

    def __init__(self, consumer: Consumer | PartitionedConsumer) -> None:
        self.consumer = consumer
        self.handlers = HandlerTimes()
        if isinstance(consumer, Consumer):
            consumer.processor.observer = self.handlers

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        s = self.consumer.stats
        counters = (
            ("tidings_consumer_received", "Messages fetched from the broker.", s.received),
            ("tidings_consumer_applied", "Handler runs that took effect.", s.applied),
            (
                "tidings_inbox_duplicates",
                "Handler runs skipped because the inbox had them done already.",
                s.duplicates,
            ),
            (
                "tidings_consumer_dead_lettered",
                "Messages or handler runs put in the inbox's dead letters.",
                s.buried,
            ),
            ("tidings_consumer_outages", "Pauses on a broker or database outage.", s.outages),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value if with_samples else None)
        yield GaugeMetricFamily(
            "tidings_consumer_paused",
            "1 while the consumer is paused on an outage, else 0.",
            value=(1 if s.outage else 0) if with_samples else None,
        )
        times = _histogram("tidings_handler_seconds", "Seconds a handler ran.", "handler")
        failures = CounterMetricFamily(
            "tidings_handler_failures",
            "Failed handler attempts (retried later, or dead-lettered).",
            labels=["handler"],
        )
        if with_samples:
            for handler, buckets in sorted(self.handlers.seconds.items()):
                _add(times, [handler], buckets)
            for handler, count in sorted(self.handlers.failures.items()):
                failures.add_metric([handler], count)
        yield times
        yield failures


class SagaWorkerCollector(_WorkerCollector):
    """A saga worker's transitions (from its ``SagaWorkerStats``)."""

    def __init__(self, worker: SagaWorker) -> None:
        self.worker = worker

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        s = self.worker.stats
        yield CounterMetricFamily(
            "tidings_saga_transitions",
            "Saga transitions this worker made.",
            value=s.transitions if with_samples else None,
        )
        yield CounterMetricFamily(
            "tidings_saga_worker_outages",
            "Pauses on a database outage.",
            value=s.outages if with_samples else None,
        )


class ProjectionRunnerCollector(_WorkerCollector):
    """A projection runner's events applied."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tidings_projection_events_applied",
            "Events this runner applied to its projections.",
            value=int(self.runner.applied) if with_samples else None,
        )


class DatabaseCollector:
    """The service's gauges read from its database at scrape time (``ServiceFigures``):
    a database that does not answer gives ``tidings_database_up 0`` and no other
    gauge, rather than a failed scrape."""

    def __init__(self, figures: ServiceFigures) -> None:
        self.figures = figures

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name checks)."""
        return _database_families(None, None)

    def collect(self) -> Iterator[Metric]:
        """Read the figures (a few queries) and give them as families."""
        began = time.perf_counter()
        try:
            found: Figures | None = self.figures.read()
        except Exception:  # a scrape must answer even when the database does not
            found = None
        return _database_families(found, time.perf_counter() - began)


def _database_families(f: Figures | None, seconds: float | None) -> Iterator[Metric]:
    """The database's families (``seconds`` None: describing them, without samples);
    without figures (the database did not answer) only the two about the scrape."""
    up = None if seconds is None else (0 if f is None else 1)
    yield GaugeMetricFamily(
        "tidings_database_up", "1 if the database answered this scrape, else 0.", value=up
    )
    yield GaugeMetricFamily(
        "tidings_database_scrape_seconds",
        "Seconds the database's gauges took to read in this scrape.",
        value=seconds,
    )
    gauges = {
        name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in DATABASE_GAUGES
    }
    failures = CounterMetricFamily(
        "tidings_saga_compensation_failures",
        "Failed compensation attempts, per saga type (from the sagas' histories).",
        labels=["saga"],
    )
    if f is not None:
        _fill(gauges, failures, f)
    yield from gauges.values()
    yield failures


DATABASE_GAUGES: tuple[tuple[str, str, list[str]], ...] = (
    ("tidings_outbox_backlog", "Outbox events not yet published.", []),
    ("tidings_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event.", []),
    ("tidings_outbox_dead_letters", "Events the relay gave up on.", []),
    ("tidings_inbox_dead_letters", "Messages or handler runs the consumers gave up on.", []),
    ("tidings_sagas", "Sagas per type and state.", ["saga", "state"]),
    (
        "tidings_saga_compensation_cost",
        "Sum of the discrepancies compensations recorded (what could not be undone).",
        ["saga"],
    ),
    ("tidings_projection_position", "The last log position a projection applied.", ["projection"]),
    (
        "tidings_projection_lag_events",
        "Committed events a projection has yet to apply.",
        ["projection"],
    ),
    (
        "tidings_projection_lag_seconds",
        "Commit time of the log's head minus that of the projection's last event.",
        ["projection"],
    ),
    (
        "tidings_projection_paused",
        "1 while a projection is paused on a failed event.",
        ["projection"],
    ),
    ("tidings_relays_alive", "Relays whose heartbeat on the outbox lanes is current.", []),
)
"""Name, help and labels of each gauge read from the database."""


def _fill(gauges: dict[str, GaugeMetricFamily], failures: CounterMetricFamily, f: Figures) -> None:
    if f.outbox is not None:
        gauges["tidings_outbox_backlog"].add_metric([], f.outbox.backlog)
        gauges["tidings_outbox_oldest_age_seconds"].add_metric([], f.outbox.oldest_age_seconds)
        gauges["tidings_outbox_dead_letters"].add_metric([], f.outbox.dead_letters)
    gauges["tidings_inbox_dead_letters"].add_metric([], f.inbox_dead_letters)
    for saga, states in sorted(f.sagas.items()):
        for state, count in sorted(states.items()):
            gauges["tidings_sagas"].add_metric([saga, state], count)
    for saga, amount in sorted(f.compensation_costs.items()):
        gauges["tidings_saga_compensation_cost"].add_metric([saga], amount)
    for saga, count in sorted(f.compensation_failures.items()):
        failures.add_metric([saga], count)
    for p in f.projections:
        gauges["tidings_projection_position"].add_metric([p.name], p.position)
        gauges["tidings_projection_lag_events"].add_metric([p.name], p.lag_events)
        gauges["tidings_projection_lag_seconds"].add_metric([p.name], p.lag_seconds)
        gauges["tidings_projection_paused"].add_metric([p.name], 1 if p.state == PAUSED else 0)
    gauges["tidings_relays_alive"].add_metric([], len(f.relays))


Collector = (
    RelayCollector
    | ConsumerCollector
    | SagaWorkerCollector
    | ProjectionRunnerCollector
    | DatabaseCollector
)


def register(
    registry: CollectorRegistry,
    *,
    store: Any = None,
    relay: Relay | None = None,
    consumer: Consumer | PartitionedConsumer | None = None,
    saga_worker: SagaWorker | None = None,
    projections: Any = None,
) -> list[Collector]:
    """Add the collectors of what is given to ``registry`` and return them: ``store``'s
    database gauges (an SQLite or PostgreSQL store), and the counters of a relay, a
    consumer, a saga worker or a projection runner running in this process."""
    collectors: list[Collector] = []
    if store is not None:
        collectors.append(DatabaseCollector(ServiceFigures(store)))
    if relay is not None:
        collectors.append(RelayCollector(relay))
    if consumer is not None:
        collectors.append(ConsumerCollector(consumer))
    if saga_worker is not None:
        collectors.append(SagaWorkerCollector(saga_worker))
    if projections is not None:
        collectors.append(ProjectionRunnerCollector(projections))
    for collector in collectors:
        registry.register(collector)
    return collectors

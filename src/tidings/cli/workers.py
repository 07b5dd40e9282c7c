"""``tidings relay`` and ``tidings consume``: the two long-running workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from tidings.adapters.brokers import open_partition, open_publisher, open_subscription
from tidings.application.backoff import Backoff
from tidings.application.handling import Handlers
from tidings.application.partitions import check_partitions, partitioned
from tidings.application.projections import Projection
from tidings.cli.loading import broker_options, load
from tidings.cli.options import (
    Db,
    LogFormat,
    LogFormatOption,
    MetricsPort,
    Prefix,
    Schema,
    open_store,
)
from tidings.cli.progress import Rate, reporting, say, stop_on_signals
from tidings.errors import ConfigurationError
from tidings.observability.heartbeat import worker_id
from tidings.observability.logs import configure as configure_logs
from tidings.observability.readiness import flowing, holds_lanes, holds_partitions
from tidings.observability.serving import metrics_available, observed
from tidings.serialization.registry import EventRegistry
from tidings.workers.consumer import Consumer, dedup_window_warning, retry_horizon
from tidings.workers.partitioned_consumer import PartitionedConsumer
from tidings.workers.relay import Relay

Options = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="Broker adapter option as name=value (repeatable)."),
]
Every = Annotated[float, typer.Option(help="Seconds between progress lines off a terminal.")]
Partitions = Annotated[
    int | None,
    typer.Option(
        help="Partitions of the stream (docs/scaling.md); the relay and every consumer "
        "of it must use the same. Unpartitioned when left out.",
    ),
]


def relay(
    db: Db,
    to: Annotated[str, typer.Option(help="Broker URL: nats://host:4222 or amqp://...")],
    source: Annotated[str, typer.Option(help="Bounded context named on the wire.")] = "tidings",
    lanes: Annotated[int, typer.Option(help="Lanes; every relay must use the same.")] = 8,
    batch: Annotated[int, typer.Option(help="Outbox rows claimed per pass.")] = 2000,
    max_attempts: Annotated[int, typer.Option(help="Attempts before a dead letter.")] = 10,
    partitions: Partitions = None,
    option: Options = None,
    every: Every = 10.0,
    metrics_port: MetricsPort = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Publish the outbox to a broker until SIGTERM or SIGINT (at least once, in order)."""
    configure_logs(log_format)
    metrics_available(metrics_port)
    counted = None if partitions is None else check_partitions(partitions)
    stop = stop_on_signals()
    store = open_store(db, prefix, schema, outbox=True, source=source)
    transport = open_publisher(to, **broker_options(option))
    try:
        encode = None if counted is None else partitioned(store.encode, counted)
        worker = store.relay(
            transport, encode, lanes=lanes, batch_size=batch, max_attempts=max_attempts
        )
        say(f"relay {worker.relay_id}: {store.database.describe()} -> {to}")
        checks = [flowing(worker.stats), holds_lanes(worker, store.database)]
        with (
            observed(
                store,
                kind="relay",
                name=source,
                worker_id=worker.relay_id,
                port=metrics_port,
                checks=checks,
                relay=worker,
            ),
            reporting(relay_status(worker), every),
        ):
            worker.run(stop)
    finally:
        transport.close()
        store.close()


def relay_status(worker: Relay) -> Callable[[], str]:
    """A function that describes the relay's progress now."""
    rate = Rate()
    outbox = worker.outbox

    def status() -> str:
        s = worker.stats
        try:
            o = outbox.stats(time.time())
            backlog = f"backlog {o.backlog}, oldest {o.oldest_age_seconds:.1f} s, "
            backlog += f"dead letters {o.dead_letters}"
        except Exception as exc:  # the database may be down: say so, keep reporting
            backlog = f"backlog unknown ({type(exc).__name__})"
        return (
            f"published {s.published} ({rate(s.published):.0f}/s), {backlog}, retried "
            f"{s.retried}, broker errors {s.broker_errors}{last_error(s.last_error)}, "
            f"lanes {s.lanes_held}"
        )

    return status


def last_error(error: str) -> str:
    """The gist of the relay's last outage (which broker or database, unreachable or not
    answering), for the progress line; empty if there was none."""
    if not error:
        return ""
    gist = error.split(" (", maxsplit=1)[0].split(". ", maxsplit=1)[0]
    return f" (last: {gist[:120]})"


def _projections_in(found: object) -> list[Projection]:
    """The projections ``--handlers`` names: a Projection, or a non-empty list of them."""
    if isinstance(found, Projection):
        return [found]
    if isinstance(found, list | tuple) and found and all(isinstance(p, Projection) for p in found):
        return list(found)
    return []


def consume(
    db: Db,
    from_: Annotated[str, typer.Option("--from", help="Broker URL: nats://... or amqp://...")],
    name: Annotated[str, typer.Option(help="Queue (RabbitMQ) or durable consumer (NATS).")],
    handlers: Annotated[
        str,
        typer.Option(help="Your Handlers, or Projection(s) to keep, as package.module:attr."),
    ],
    registry: Annotated[
        str | None,
        typer.Option(help="Your EventRegistry as module:attr (default: the handlers' events)."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Messages per database transaction.")] = 500,
    max_attempts: Annotated[int, typer.Option(help="Attempts before a dead letter.")] = 5,
    dedup_window_hours: Annotated[
        float, typer.Option(help="How long processed rows are kept.")
    ] = 168.0,
    partitions: Partitions = None,
    option: Options = None,
    every: Every = 10.0,
    metrics_port: MetricsPort = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Handle a broker's events through the inbox until SIGTERM or SIGINT (exactly once);
    ``--handlers`` may name projections too, kept from the stream (docs/cqrs.md)."""
    configure_logs(log_format)
    metrics_available(metrics_port)
    found = load(handlers, "--handlers")
    projections = _projections_in(found)
    if not (isinstance(found, Handlers) or projections):
        raise ConfigurationError(
            f"--handlers {handlers!r} is not a tidings Handlers registry, nor a Projection "
            "or a list of them"
        )
    chosen: Handlers = found if isinstance(found, Handlers) else Handlers()
    events = load(registry, "--registry") if registry else EventRegistry(chosen.event_classes())
    counted = None if partitions is None else check_partitions(partitions)
    stop = stop_on_signals()
    store = open_store(db, prefix, schema, registry=events)
    if projections:
        chosen = store.projection_handlers(projections, chosen)
    options = broker_options(option)
    if counted is None:
        subscription = open_subscription(from_, name, **options)
    else:  # partition 0's, for its options; each partition opens its own
        subscription = open_partition(from_, name, 0, **dict(options))
    window = dedup_window_hours * 3600
    horizons = [("a relay's retries", retry_horizon(Backoff(), 10))]
    ack_wait = float(getattr(subscription, "ack_wait", 0.0))
    if ack_wait:  # a message handled but not acked comes again after ack_wait
        horizons.append(("the broker's redelivery", ack_wait * 2))
    warning = dedup_window_warning(window, *horizons)
    if warning:
        say(f"warning: {warning}")
    settings: dict[str, Any] = {
        "batch_size": batch,
        "max_attempts": max_attempts,
        "dedup_window_seconds": window,
    }
    try:
        worker: Consumer | PartitionedConsumer
        if counted is None:
            worker = store.consumer(subscription, chosen, **settings)
            say(f"consumer {name}: {from_} -> {store.database.describe()}")
        else:
            subscription.close()
            worker = store.partitioned_consumer(
                lambda part: open_partition(from_, name, part, **dict(options)),
                chosen,
                name=name,
                partitions=counted,
                **settings,
            )
            say(
                f"consumer {name} ({counted} partitions, as {worker.owner}): {from_} -> "
                f"{store.database.describe()}"
            )
        checks = [flowing(worker.stats)]
        if isinstance(worker, PartitionedConsumer):
            checks.append(holds_partitions(worker))
        with (
            observed(
                store,
                kind="consumer",
                name=name,
                worker_id=worker_id(name),
                port=metrics_port,
                checks=checks,
                consumer=worker,
            ),
            reporting(consumer_status(worker), every),
        ):
            worker.run(stop)
    finally:
        subscription.close()
        store.close()


def consumer_status(worker: Consumer | PartitionedConsumer) -> Callable[[], str]:
    """A function that describes the consumer's progress now."""
    rate = Rate()

    def status() -> str:
        s = worker.stats
        line = (
            f"received {s.received} ({rate(s.received):.0f}/s), applied {s.applied}, "
            f"duplicates {s.duplicates}, retried {s.retried}, held {s.held}, "
            f"dead letters {s.buried}, outages {s.outages}"
        )
        if isinstance(worker, PartitionedConsumer):
            line += f", partitions {worker.held}"
        return line

    return status

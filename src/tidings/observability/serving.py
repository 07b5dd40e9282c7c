"""What a worker command does to be observed: a heartbeat row always, and with
``--metrics-port`` the metrics, health and readiness server (the metrics extra)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from tidings.adapters.extras import require
from tidings.observability.heartbeat import Heartbeat
from tidings.observability.readiness import Check, database_answers


def metrics_available(port: int | None) -> None:
    """With a metrics port, raise ``ConfigurationError`` naming the metrics extra if it is
    missing: a worker command calls it first, before it opens anything."""
    if port is not None:
        require("metrics", "--metrics-port")


@contextmanager
def observed(
    store: Any,
    *,
    kind: str,
    name: str,
    worker_id: str,
    port: int | None,
    checks: Sequence[Check] = (),
    **workers: Any,
) -> Iterator[None]:
    """While the block runs: beat for the worker, and serve ``/metrics``, ``/healthz``
    and ``/readyz`` on ``port`` (when given) with the store's gauges and the counters of
    ``workers`` (``relay=``, ``consumer=``, ``saga_worker=``, ``projections=``, as
    ``register`` takes them). ``checks`` are readiness checks besides the database's."""
    with ExitStack() as stack:
        if getattr(store.database, "tables", None) is not None:
            stack.enter_context(Heartbeat(store.database, kind, name, worker_id))
        if port is not None:
            metrics_available(port)
            from prometheus_client.registry import CollectorRegistry

            from tidings.observability.health import MetricsServer
            from tidings.observability.metrics import register

            registry = CollectorRegistry()
            collectors = register(registry, store=store, **workers)
            # The worker's own checks first: they answer at once while it is paused.
            server = MetricsServer(port, registry, [*checks, database_answers(store.database)])
            stack.callback(server.close)
            for collector in collectors:
                close = getattr(getattr(collector, "figures", None), "close", None)
                if close is not None:
                    stack.callback(close)
        yield

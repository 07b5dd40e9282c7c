"""The Grafana dashboard and the Prometheus alert rules in docs/ name only metrics that
tidings exposes (collected from a live registry, not from a list kept by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.registry import CollectorRegistry

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.examples.shop.inventory import handlers
from tidings.observability.metrics import register
from tidings.workers.sagas import SagaWorker

DOCS = Path(__file__).parents[2] / "docs" / "observability"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exposed(tmp_path: Path) -> set[str]:
    """The sample names of every collector tidings has, as a registry describes them."""
    store = tidings.connect(f"sqlite:///{tmp_path / 'names.db'}", outbox=True)
    queue = MemoryQueue()
    registry = CollectorRegistry()
    register(
        registry,
        store=store,
        relay=store.relay(MemoryPublisher(queue)),
        consumer=store.consumer(MemorySubscription(queue), handlers(), name="names"),
        saga_worker=SagaWorker(store, []),
        projections=store.projections(),
    )
    try:
        families = list(registry.collect())
    finally:
        store.close()
    return {f.name + s for f in families for s in SUFFIXES.get(f.type, ("",))}


def named_in(text: str) -> set[str]:
    return set(re.findall(r"\btidings_[a-z_]+\b", text))


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    found = [
        (f"dashboard panel {p['title']!r}", t["expr"])
        for p in dashboard["panels"]
        for t in p["targets"]
    ]
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    found += [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    return found


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_every_metric_the_dashboard_and_alerts_name_is_exposed(
    tmp_path: Path, where: str, expr: str
) -> None:
    """Each expression of the dashboard and of the alert rules queries exposed metrics."""
    names = named_in(expr)
    assert names, f"{where} names no tidings metric: {expr}"
    missing = names - exposed(tmp_path)
    assert not missing, f"{where} names metrics tidings does not expose: {sorted(missing)}"


def test_the_alerts_cover_the_four_things_that_go_wrong() -> None:
    """Backlog age, dead letters, projection lag over 10 s, sagas needing intervention."""
    exprs = " ".join(e for _, e in expressions() if _.startswith("alert"))
    for name in (
        "tidings_outbox_oldest_age_seconds",
        "tidings_outbox_dead_letters",
        "tidings_inbox_dead_letters",
        "tidings_projection_lag_seconds",
        'tidings_sagas{state="NEEDS_INTERVENTION"}',
    ):
        assert name in exprs

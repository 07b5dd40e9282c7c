"""What the console's pages show, read through the store methods the CLI calls."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

import tidings
from tidings.application.projections.status import ProjectionStatus
from tidings.application.projections.waiting import STREAM
from tidings.cli.options import outbox_of
from tidings.domain import saga_state as st
from tidings.domain.saga_state import SagaResult
from tidings.observability.figures import Figures, ServiceFigures

INTERVENTION = st.NEEDS_INTERVENTION
SAGA_STATES = (INTERVENTION, *st.ACTIVE, st.COMPLETED, st.COMPENSATED, st.RESOLVED)
LIST_LIMIT = 200


def pretty(body: bytes) -> str:
    """A message or payload as indented JSON; as text when it is not JSON."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Overview:
    """The overview's figures; ``numbers()`` is what the page refreshes."""

    backlog: int
    oldest_age_seconds: float
    outbox_dead: int
    inbox_dead: int
    saga_counts: dict[str, int]
    needs_intervention: list[SagaResult]
    projections: list[ProjectionStatus]
    workers: list[dict[str, Any]]

    def numbers(self) -> dict[str, Any]:
        """Flat figures by name, as the page's ``data-metric`` attributes name them."""
        figures: dict[str, Any] = {
            "outbox.backlog": self.backlog,
            "outbox.oldest": f"{self.oldest_age_seconds:.1f}",
            "outbox.dead": self.outbox_dead,
            "inbox.dead": self.inbox_dead,
        }
        for state in SAGA_STATES:
            figures[f"sagas.{state}"] = self.saga_counts.get(state, 0)
        for p in self.projections:
            figures[f"projection.{p.name}.lag_events"] = p.lag_events
            figures[f"projection.{p.name}.lag_seconds"] = f"{p.lag_seconds:.1f}"
            figures[f"projection.{p.name}.state"] = p.state
            figures[f"projection.{p.name}.version"] = p.version
            figures[f"projection.{p.name}.position"] = p.position
            figures[f"projection.{p.name}.head"] = p.head
            figures[f"projection.{p.name}.done"] = done(p)
            figures[f"projection.{p.name}.pace"] = pace(p)
        return figures


def done(status: ProjectionStatus) -> str:
    """How much of the log a projection (or a rebuild's shadow) holds, in percent."""
    return f"{100.0 * status.position / status.head:.0f}" if status.head else "100"


def pace(status: ProjectionStatus) -> str:
    """A rebuild's rate and ETA, as ``tidings projections status`` prints them."""
    if status.rate is None or status.eta_seconds is None:
        return "rate not known yet"
    return f"{status.rate:,.0f} events/s, ETA {status.eta_seconds:,.0f} s"


@dataclass(frozen=True)
class ProjectionRows:
    """A projection's checkpoint rows: the live one, a rebuild's shadow under way
    (``NAME~rebuild``), the version a swap replaced, kept for a rollback (``NAME~old``).
    ``live`` is None for a projection only the console's ``--projections`` knows."""

    name: str
    live: ProjectionStatus | None
    rebuild: ProjectionStatus | None
    old: ProjectionStatus | None


def projection_rows(statuses: list[ProjectionStatus], known: list[str]) -> list[ProjectionRows]:
    """The rows of each projection, by name: those with checkpoints, and those in
    ``known`` (the console's code) that have none here yet."""
    by_name: dict[str, dict[str, ProjectionStatus]] = {name: {} for name in known}
    for s in statuses:
        base, _, kind = s.name.partition("~")
        by_name.setdefault(base, {})[kind or "live"] = s
    return [
        ProjectionRows(name, rows.get("live"), rows.get("rebuild"), rows.get("old"))
        for name, rows in sorted(by_name.items())
    ]


def overview(store: tidings.Store) -> Overview:
    """Outbox backlog and dead letters, inbox dead letters, sagas by state (those needing
    intervention listed), projections with their lag, and the workers alive: the figures
    ``tidings status`` and the metrics read (``ServiceFigures``)."""
    outbox_of(store)  # a store without an outbox is refused with the CLI's message
    with closing(ServiceFigures(store)) as reader:
        f = reader.read()
    assert f.outbox is not None  # noqa: S101 - outbox_of refused a store without one
    by_state: dict[str, int] = {}
    for states in f.sagas.values():
        for state, count in states.items():
            by_state[state] = by_state.get(state, 0) + count
    return Overview(
        backlog=f.outbox.backlog,
        oldest_age_seconds=f.outbox.oldest_age_seconds,
        outbox_dead=f.outbox.dead_letters,
        inbox_dead=f.inbox_dead_letters,
        saga_counts=by_state,
        needs_intervention=store.sagas().listing(INTERVENTION, 20),
        projections=[p for p in f.projections if p.state != STREAM],
        workers=workers(f),
    )


def projections(store: tidings.Store) -> list[ProjectionStatus]:
    """Each projection of this store's log (those fed by a stream have no head here)."""
    with closing(store.projections()) as runner:
        return [s for s in runner.status() if s.state != STREAM]


def workers(f: Figures) -> list[dict[str, Any]]:
    """Relays holding lanes and workers that beat, each as a name and a line."""
    return [
        *({"name": "relay", "detail": r.describe()} for r in f.relays),
        *({"name": w.kind, "detail": w.describe()} for w in f.workers),
    ]


def sagas(store: tidings.Store, state: str | None, saga_type: str | None) -> list[SagaResult]:
    """Sagas in ``state`` (all if None) of ``saga_type`` (all if None), those needing
    intervention first."""
    found = store.sagas().listing(state, LIST_LIMIT)
    if saga_type:
        found = [s for s in found if s.saga_type == saga_type]
    return sorted(found, key=lambda s: s.state != INTERVENTION)


def as_json(status: ProjectionStatus) -> dict[str, Any]:
    """A projection's figures for the JSON endpoint."""
    return {**asdict(status), "stale": status.stale, "lagging": status.lagging}

"""The figures of a whole service, read from its database in a few cheap queries: what
``tidings status`` shows and what the metrics' database gauges expose at scrape time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tidings.application.projections import ProjectionStatus
from tidings.domain.saga_state import NEEDS_INTERVENTION
from tidings.ports import OUTBOX_LANES, OutboxStats

ALIVE_WITHIN = 15.0  # seconds: three heartbeats of a worker missed count it as gone


@dataclass(frozen=True)
class RelaySeen:
    """A relay that heartbeats on the outbox's lanes: how many it holds, and for how many
    seconds more its heartbeat keeps it counted alive."""

    owner: str
    lanes: int
    alive_for: float

    def describe(self) -> str:
        """One line for an operator."""
        return f"{self.owner}: {self.lanes} lane(s), lease {self.alive_for:.1f} s left"


@dataclass(frozen=True)
class WorkerSeen:
    """A worker's heartbeat row (``tidings relay``, ``consume``, ``sagas run``,
    ``projections run``): how long ago it last beat."""

    worker_id: str
    kind: str
    name: str
    started_at: float
    seen_ago: float

    @property
    def alive(self) -> bool:
        """Seen within three heartbeats."""
        return self.seen_ago <= ALIVE_WITHIN

    def describe(self) -> str:
        """One line for an operator."""
        alive = "alive" if self.alive else "gone?"
        return (
            f"{self.kind} {self.name} ({self.worker_id}): {alive}, seen {self.seen_ago:.1f} s ago"
        )


@dataclass(frozen=True)
class Figures:
    """One look at a service's tables."""

    outbox: OutboxStats | None
    inbox_dead_letters: int
    sagas: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> state -> count
    compensation_failures: dict[str, int] = field(default_factory=dict)  # per saga type
    compensation_costs: dict[str, float] = field(default_factory=dict)  # per saga type
    projections: list[ProjectionStatus] = field(default_factory=list)
    relays: list[RelaySeen] = field(default_factory=list)
    workers: list[WorkerSeen] = field(default_factory=list)

    @property
    def needing_intervention(self) -> int:
        """Sagas waiting in the intervention queue."""
        return sum(states.get(NEEDS_INTERVENTION, 0) for states in self.sagas.values())


class ServiceFigures:
    """Reads ``Figures`` from a store's database (SQLite or PostgreSQL), each time it is
    asked: nothing is read between two looks."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._database = store.database
        self._tables: dict[str, str] = store.database.tables
        self._mark = "%s" if store.database.dialect == "postgresql" else "?"
        self._runner: Any = None

    def read(self, now: float | None = None) -> Figures:
        """The figures as of now (``now`` in seconds since the epoch)."""
        now = time.time() if now is None else now
        outbox = self._store.outbox
        sagas, failures, costs = self._sagas()
        return Figures(
            outbox=None if outbox is None else outbox.stats(now),
            inbox_dead_letters=self._count("inbox_dead_letters"),
            sagas=sagas,
            compensation_failures={k: int(v) for k, v in failures.items()},
            compensation_costs=costs,
            projections=self._projections(),
            relays=self._relays(now),
            workers=self._workers(now),
        )

    def ping(self) -> None:
        """Raise ``StorageError`` unless the database answers."""
        self._database.query("SELECT 1")

    def close(self) -> None:
        """Release what reading projections holds."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def _count(self, table: str) -> int:
        return int(self._database.query(f"SELECT count(*) FROM {self._tables[table]}")[0][0])

    def _sagas(self) -> tuple[dict[str, dict[str, int]], dict[str, float], dict[str, float]]:
        t = self._tables
        sagas: dict[str, dict[str, int]] = {}
        rows = self._database.query(
            f"SELECT saga_type, state, count(*) FROM {t['sagas']} GROUP BY saga_type, state"
        )
        for saga_type, state, count in rows:
            sagas.setdefault(saga_type, {})[state] = int(count)
        # Each kind on its own (the partial indexes match `kind = '...'` exactly).
        return sagas, self._transitions("compensation_failed"), self._transitions("discrepancy")

    def _transitions(self, kind: str) -> dict[str, float]:
        """Per saga type: how many transitions of ``kind`` (their amounts for
        discrepancies)."""
        t = self._tables
        what = "sum(t.amount)" if kind == "discrepancy" else "count(*)"
        rows = self._database.query(
            f"SELECT s.saga_type, {what} FROM {t['saga_transitions']} t "
            f"JOIN {t['sagas']} s ON s.saga_id = t.saga_id WHERE t.kind = '{kind}' "
            "GROUP BY s.saga_type"
        )
        return {saga_type: float(value or 0) for saga_type, value in rows}

    def _projections(self) -> list[ProjectionStatus]:
        if self._runner is None:
            self._runner = self._store.projections()
        found: list[ProjectionStatus] = self._runner.status()
        return found

    def _relays(self, now: float) -> list[RelaySeen]:
        t, m = self._tables, self._mark
        lanes = dict(
            self._database.query(
                f"SELECT owner, count(*) FROM {t['leases']} WHERE name = {m} "
                f"AND owner IS NOT NULL AND lease_until > {m} GROUP BY owner",
                (OUTBOX_LANES, now),
            )
        )
        owners = self._database.query(
            f"SELECT owner, alive_until FROM {t['lease_owners']} WHERE name = {m} "
            f"AND alive_until > {m} ORDER BY owner",
            (OUTBOX_LANES, now),
        )
        return [RelaySeen(o, int(lanes.get(o, 0)), float(until) - now) for o, until in owners]

    def _workers(self, now: float) -> list[WorkerSeen]:
        rows = self._database.query(
            f"SELECT worker_id, kind, name, started_at, seen_at FROM {self._tables['workers']} "
            "ORDER BY kind, name, worker_id"
        )
        return [
            WorkerSeen(w, kind, name, float(started), max(now - float(seen), 0.0))
            for w, kind, name, started, seen in rows
        ]

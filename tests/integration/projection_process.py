"""The projections the SIGKILL tests run with ``tidings projections run``: every event
applied is kept in ``crash_seen`` (no key, so an event applied twice shows twice), and
each handler takes a little time so that a kill lands in the middle of a batch."""

from __future__ import annotations

import time
from typing import Any

from tidings.application.projections import Projection
from tidings.testing.contract import Counted


def totals(name: str, pause: float) -> Projection:
    """Sums per counter in ``<name>_totals``, applied event ids in ``<name>_seen``."""

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(
            f"INSERT INTO {name}_totals (id, total) VALUES (:id, :s) ON CONFLICT (id)"
            f" DO UPDATE SET total = {name}_totals.total + excluded.total",
            {"id": e.aggregate_id, "s": e.step},
        )
        uow.execute(f"INSERT INTO {name}_seen (event_id) VALUES (:e)", {"e": e.event_id})
        time.sleep(pause)

    return Projection(
        name,
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {name}_totals (id TEXT PRIMARY KEY, total INTEGER)",
            f"CREATE TABLE IF NOT EXISTS {name}_seen (event_id TEXT)",
        ],
    )


PROJECTIONS = [totals("crash", 0.001)]

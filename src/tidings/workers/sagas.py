"""The saga worker: drives due sagas (fired retry timers, steps whose owner died) until
stopped.

Each pass (``run_once``) is the orchestrator's ``run_once``; between passes the worker
sleeps until the earliest saga's wake-up time, at most ``interval`` seconds (sagas that
another process starts are seen within that), never in a busy loop. Several workers may
run on one database: each saga's version keeps two of them from moving it at once.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tidings.application.backoff import Backoff
from tidings.application.sagas import Orchestrator
from tidings.domain.saga import SagaDefinition
from tidings.domain.saga_state import SagaResult
from tidings.domain.saga_versions import SagaUpcaster
from tidings.errors import StorageError
from tidings.workers.passes import Background, run_passes

log = logging.getLogger("tidings.sagas")


@dataclass
class SagaWorkerStats:
    """What a saga worker has done since it started."""

    passes: int = 0
    transitions: int = 0
    outages: int = 0
    last_error: str = ""
    outage: str = ""  # the outage the worker is paused on now; empty while it runs
    next_wake: float | None = None
    started_at: float = field(default_factory=time.time)


def new_worker_id() -> str:
    """saga-worker@host-pid: unique per process, readable on a saga's history."""
    return f"saga-worker@{socket.gethostname()}-{os.getpid()}"


class SagaWorker(Background):
    """Keeps driving the sagas of ``definitions`` in ``store`` until stopped."""

    def __init__(
        self,
        store: Any,
        definitions: Iterable[SagaDefinition | SagaUpcaster],
        *,
        interval: float = 1.0,
        batch: int = 100,
        lease: float = 30.0,
        by: str | None = None,
        clock: Callable[[], float] = time.time,
        on_intervention: Callable[[SagaResult], None] | None = None,
        outage_backoff: Backoff | None = None,
    ) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError(
                f"SagaWorker(interval={interval}, batch={batch}): give an interval above 0"
                " seconds and a batch of at least 1"
            )
        self.worker_id = by or new_worker_id()
        self.sagas: Orchestrator = store.sagas(
            definitions,
            clock=clock,
            lease=lease,
            on_intervention=on_intervention,
            by=self.worker_id,
        )
        self.interval, self.batch, self.clock = interval, batch, clock
        self.outage_backoff = outage_backoff or Backoff(base=0.2, cap=30.0)
        self.stats = SagaWorkerStats()
        self._stop = threading.Event()
        self._thread = None

    @property
    def refused(self) -> dict[str, str]:
        """Sagas left alone because no definition here drives their version, with why."""
        return self.sagas.refused

    def run_once(self) -> int:
        """Drive every saga that is due now; return how many transitions were made."""
        moved = self.sagas.run_once(self.batch)
        self.stats.passes += 1
        self.stats.transitions += moved
        return moved

    def run(self, stop: threading.Event | None = None) -> None:
        """Pass after pass until ``stop`` is set (a pass is never cut in half)."""
        stop = stop or self._stop
        run_passes(
            stop,
            lambda: self._pass(stop),
            pauses_on=(StorageError,),
            backoff=self.outage_backoff,
            rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            on_pause=self._paused,
            on_resume=self._resumed,
        )

    def _pass(self, stop: threading.Event) -> None:
        began = self.clock()
        if self.run_once():
            return  # work was done: look again at once, more may have come due
        wake = self.sagas.next_wake(began)  # sagas due before `began` were just driven
        self.stats.next_wake = wake
        wait = self.interval if wake is None else max(0.0, wake - self.clock())
        stop.wait(min(wait, self.interval))

    def _paused(self, exc: Exception) -> None:
        self.stats.outages += 1
        self.stats.last_error = self.stats.outage = str(exc)

    def _resumed(self) -> None:
        self.stats.outage = ""

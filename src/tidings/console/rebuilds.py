"""The rebuilds the console runs: each in a thread of its own, as ``tidings projections
rebuild`` runs it (build the shadow, then swap it in), and how each one ended.

The console's pages read a rebuild's progress from its checkpoint row (``NAME~rebuild``:
position, head, rate, ETA), as ``tidings projections status`` does; this module only
keeps what the store does not: whether this console's thread is still at work, and the
outcome it came to.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from tidings.application.projections import Projection, Rebuild
from tidings.domain.projection_state import Checkpoint
from tidings.errors import ProjectionError

log = logging.getLogger(__name__)

RUNNING, SWAPPED, FAILED, STOPPED = "running", "swapped", "failed", "stopped"


@dataclass
class Job:
    """One rebuild started from the console: its state and what it came to."""

    name: str
    version: int
    by: str
    started_at: float
    state: str = RUNNING
    outcome: str = ""
    ended_at: float = 0.0

    def describe(self) -> str:
        """One line for the projections page."""
        if self.state == RUNNING:
            return f"rebuild to version {self.version} started by {self.by}: running"
        return f"rebuild to version {self.version} started by {self.by}: {self.outcome}"


class Rebuilds:
    """The console's rebuild threads, at most one per projection."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, store: Any, projection: Projection, by: str, batch: int) -> Checkpoint:
        """Begin (or go on with) the rebuild of ``projection`` here, then build and swap
        it in a thread; what refuses to begin (an old version kept, another version under
        way) is raised at once, for the page to say."""
        name = projection.name
        with self._lock:
            if self.running(name):
                raise ProjectionError(
                    f"projection {name!r}: this console is rebuilding it already; wait for "
                    "the end (the projections page shows its progress)"
                )
            job = store.rebuild(projection, batch=batch)
            shadow: Checkpoint = job.begin()
            self._jobs[name] = found = Job(name, projection.version, by, time.time())
            thread = threading.Thread(
                target=self._run, args=(job, found), name=f"rebuild {name}", daemon=True
            )
            self._threads[name] = thread
        thread.start()
        return shadow

    def _run(self, job: Rebuild, found: Job) -> None:
        try:
            job.catch_up(self._stop.is_set)
            if self._stop.is_set():
                self._end(found, STOPPED, "stopped with the console; rebuild again to go on")
                return
            swapped = job.swap()
        except Exception as exc:  # the user's handler or the database: the page says which
            self._end(found, FAILED, f"failed: {exc}")
            return
        self._end(
            found,
            SWAPPED,
            f"version {swapped.version} swapped in at position {swapped.position}; the old "
            "tables are kept for a rollback",
        )

    def _end(self, found: Job, state: str, outcome: str) -> None:
        found.state, found.outcome, found.ended_at = state, outcome, time.time()
        log.info("rebuild of %s by %s: %s", found.name, found.by, outcome)

    def running(self, name: str) -> bool:
        """Whether this console's thread is rebuilding ``name`` now."""
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def jobs(self) -> list[Job]:
        """The rebuilds this console started, by projection name."""
        return [self._jobs[name] for name in sorted(self._jobs)]

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every rebuild to stop after its batch (each goes on from its checkpoint
        when started again), and wait for them."""
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

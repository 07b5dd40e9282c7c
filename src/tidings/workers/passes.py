"""What the workers share: passes until stopped, pausing through outages; bounded cleanup;
running in a background thread."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from tidings.application.backoff import Backoff

log = logging.getLogger("tidings.workers")


def run_passes(
    stop: threading.Event,
    one_pass: Callable[[], None],
    *,
    pauses_on: tuple[type[Exception], ...],
    backoff: Backoff,
    rng: random.Random,
    on_pause: Callable[[Exception], None],
    on_resume: Callable[[], None] | None = None,
) -> None:
    """Call ``one_pass`` until ``stop`` is set; an error of ``pauses_on`` (an outage) makes
    the next pass wait, longer each time it happens again in a row. ``on_resume`` is
    called when a pass succeeds after an outage (a readiness probe turns ready again)."""
    outage = 0
    while not stop.is_set():
        try:
            one_pass()
        except pauses_on as exc:
            outage += 1
            on_pause(exc)
            pause = backoff.delay(outage, rng)
            log.warning("paused %.1f s: %s", pause, exc)
            stop.wait(pause)
            continue
        if outage and on_resume is not None:
            on_resume()
        outage = 0


def delete_in_batches(delete: Callable[[int], int], batch: int = 1000, most: int = 10) -> None:
    """Delete in small batches, at most ``most`` of them, so the worker stays responsive."""
    for _ in range(most):
        if delete(batch) < batch:
            return


class Background:
    """``start`` runs ``self.run(stop)`` in a daemon thread; ``stop`` ends it."""

    _stop: threading.Event
    _thread: threading.Thread | None

    def run(self, stop: threading.Event | None = None) -> None:
        """The worker's loop (provided by the worker)."""
        raise NotImplementedError

    def start(self) -> None:
        """Run in a background thread (inside an application)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name=type(self).__name__, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

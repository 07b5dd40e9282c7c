"""Progress of a long-running worker: a live line on a terminal, a log line elsewhere."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live

from tidings.observability.logs import json_lines

console = Console(highlight=False, soft_wrap=True, stderr=True)
log = logging.getLogger("tidings.cli")


def say(text: str) -> None:
    """A line for the operator: on the console, or a log line when the worker writes its
    log as JSON lines (``--log-format json``), so that a log shipper reads every line."""
    if json_lines():
        log.info("%s", text)
    else:
        console.print(text, markup=False)


@contextmanager
def reporting(status: Callable[[], str], every: float) -> Iterator[None]:
    """Show ``status()`` every ``every`` seconds until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        if console.is_terminal and not json_lines():
            with Live(status(), console=console, refresh_per_second=4) as live:
                while not stop.wait(min(every, 1.0)):
                    live.update(status())
        else:
            while not stop.wait(every):
                say(status())

    thread = threading.Thread(target=loop, name="tidings-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        say(status())


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the worker finishes its batch and stops."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        say(f"{signal.Signals(signum).name}: finishing the batch in hand, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


class Rate:
    """Events per second between two readings of a counter."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), 0)

    def __call__(self, count: int) -> float:
        now = time.monotonic()
        then, before = self._last
        self._last = (now, count)
        return (count - before) / max(now - then, 1e-9)

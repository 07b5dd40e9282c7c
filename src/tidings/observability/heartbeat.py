"""Heartbeats: each worker the tidings command runs keeps a row in the ``workers`` table
fresh, so ``tidings status`` can list the relays, consumers, saga workers and projection
runners seen alive (a consumer holds no lease whose owners could tell it)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from tidings.errors import StorageError

log = logging.getLogger(__name__)

INTERVAL = 5.0
"""Seconds between two beats: one small upsert each, whatever the worker's load."""

FORGOTTEN_AFTER = 3600.0
"""Rows of workers not seen for this long (killed, never stopped cleanly) are deleted."""


def worker_id(name: str) -> str:
    """name@host-pid: unique per process, readable in ``tidings status``."""
    return f"{name}@{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """Beats for one worker in a daemon thread while the ``with`` block runs, and deletes
    its row when the block ends (a clean stop). A beat the database refuses is logged and
    tried again at the next one: a heartbeat never stops its worker."""

    def __init__(
        self, database: Any, kind: str, name: str, worker_id: str, interval: float = INTERVAL
    ) -> None:
        self.worker_id, self.kind, self.name, self.interval = worker_id, kind, name, interval
        self._database = database
        self._table = database.tables["workers"]
        self._m = "%s" if database.dialect == "postgresql" else "?"
        self._started = time.time()
        self._stop = threading.Event()
        self._failing = False  # the last beat could not be written
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def beat(self) -> None:
        """Say this worker is alive now."""
        now, m, table = time.time(), self._m, self._table
        with self._database.transaction() as tx:
            tx.execute(
                f"INSERT INTO {table} (worker_id, kind, name, started_at, seen_at) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at",
                (self.worker_id, self.kind, self.name, self._started, now),
            )
            tx.execute(f"DELETE FROM {table} WHERE seen_at < {m}", (now - FORGOTTEN_AFTER,))

    def _run(self) -> None:
        while True:
            try:
                self.beat()
                self._failing = False
            except StorageError as exc:
                self._failing = True
                log.warning("heartbeat of %s not written: %s", self.worker_id, exc)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.interval)
        if self._failing:  # the database is out: the row ages out instead (FORGOTTEN_AFTER)
            log.warning("heartbeat row of %s left to age out: the database is out", self.worker_id)
            return
        try:
            with self._database.transaction() as tx:
                tx.execute(
                    f"DELETE FROM {self._table} WHERE worker_id = {self._m}", (self.worker_id,)
                )
        except StorageError as refused:
            log.warning("heartbeat row of %s not deleted: %s", self.worker_id, refused)

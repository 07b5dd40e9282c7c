"""A worker's heartbeat when its database is out: never in the way of stopping."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import tidings
from tidings.errors import ServerUnavailableError
from tidings.observability.heartbeat import Heartbeat


class GoneDatabase:
    """The store's database until ``gone``; then every transaction fails as an outage,
    counted."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.gone, self.tried = inner, False, 0

    def transaction(self) -> AbstractContextManager[Any]:
        """The real transaction, or the outage."""
        if self.gone:
            self.tried += 1
            raise ServerUnavailableError("cannot reach the database")
        return self._inner.transaction()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def rows(store: tidings.Store) -> list[Any]:
    """The workers table's rows."""
    table = store.database.tables["workers"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        return list(uow.execute(f"SELECT worker_id FROM {table}").fetchall())


def test_a_heartbeat_whose_last_beat_failed_leaves_its_row_to_age_out(tmp_path: Path) -> None:
    """Its last beat refused, the heartbeat does not ask the database again on exit (which
    would wait for the connect timeout): the row ages out."""
    store = tidings.connect(f"sqlite:///{tmp_path / 'workers.db'}")
    database = GoneDatabase(store.database)
    database.gone = True
    with Heartbeat(database, "relay", "orders", "relay-1", interval=60):
        deadline = time.monotonic() + 10
        while database.tried < 1 and time.monotonic() < deadline:  # the first beat, refused
            time.sleep(0.01)
        assert database.tried == 1
    assert database.tried == 1  # no delete was tried on exit


def test_a_heartbeat_deletes_its_row_on_a_clean_stop(tmp_path: Path) -> None:
    """The database answering, the row goes when the worker stops."""
    store = tidings.connect(f"sqlite:///{tmp_path / 'workers.db'}")
    with Heartbeat(store.database, "relay", "orders", "relay-1", interval=60) as beating:
        beating.beat()
        assert [r[0] for r in rows(store)] == ["relay-1"]
    assert rows(store) == []

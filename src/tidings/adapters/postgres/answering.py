"""A psycopg connection that gives up on a server that does not answer.

A PostgreSQL server that is paused, frozen by a full disk or cut off by a network
partition keeps its TCP connections open (a paused process's kernel still acknowledges
what is sent to it), so a statement in flight would wait for its answer forever, and a
worker would hang without a word. Each round trip on an ``AnsweringConnection`` (a
statement, a commit) gets ``Patience.seconds``; past that the connection is closed (the
pool replaces a closed connection) and the caller gets ``psycopg.OperationalError``,
which tidings reports as ``ServerUnavailableError``: an outage the workers wait out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen

RV = TypeVar("RV")


@dataclass
class Patience:
    """Seconds a round trip may take before the server counts as not answering (None:
    wait for ever). Shared by every connection of a database, so a change applies to all."""

    seconds: float | None


class AnsweringConnection(psycopg.Connection[Any]):
    """A psycopg connection whose round trips last at most ``patience.seconds``."""

    patience: Patience | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        """psycopg's wait, with our deadline when the caller set none."""
        limit = self.patience.seconds if self.patience is not None else None
        if timeout is not None or limit is None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, limit)
        except psycopg.errors._WaitTimeout as exc:  # psycopg's own: made public here
            # Half a round trip is left on the wire: the connection is of no more use.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the server gave no answer within {limit:g} s (stalled, overloaded, or cut "
                "off); the statement may or may not have run. Raise the database's "
                "response_timeout for statements that take longer"
            ) from exc

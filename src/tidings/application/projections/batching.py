"""The unit of work a runner's handlers write through: runs of one statement merged.

A handler is a function of one event, so a batch of 500 events is 500 ``uow.execute``
calls; most of them are the same write with other parameters (an upsert per event). This
wrapper holds each write (INSERT, UPDATE or DELETE without RETURNING) and lets the next
ones with the same SQL join it; the run goes to the database as one ``executemany``
(sqlite3's loop in C, psycopg's batch) when a statement of another text comes, when the
connection is asked for, or at the end of the batch. So the database sees the statements
in the order the handlers made them, and only consecutive statements of the same text are
merged. What ``execute`` returns for a held write is sent alone (after the run before it)
the moment the handler reads it (``rowcount``, a fetch), so a handler that looks at its
result sees its own statement's, as without merging. The handlers stay per-event functions
and read as before: nothing to declare.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tidings.application.projections.bulk import execute_many
from tidings.errors import ProjectionError
from tidings.ports import Params

_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b", re.I)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)


class HeldResult:
    """What ``execute`` returns for a held write: reading it sends it first, alone."""

    def __init__(self, work: MergingWork, number: int) -> None:
        self._work, self._number = work, number
        self._cursor: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sent(), name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._sent())

    def _sent(self) -> Any:
        if self._cursor is None:
            self._cursor = self._work.result_of(self._number)
        return self._cursor


class MergingWork:
    """``handler(work, event)`` sees this in place of the unit of work in a runner's
    batch; ``flush()`` sends what is held (the runner calls it before the checkpoint)."""

    def __init__(self, uow: Any) -> None:
        self._uow = uow
        self._sql = ""
        self._params: list[Params] = []
        self._numbers: list[int] = []  # the HeldResult number of each held statement
        self._count = 0
        self.merged = 0  # statements sent in a run of two or more

    def __getattr__(self, name: str) -> Any:
        """The unit of work's other members (``dialect``, ``transaction``, ...); what
        is held goes first, so a write made through them comes after it."""
        if name != "dialect":
            self.flush()
        return getattr(self._uow, name)

    @property
    def connection(self) -> Any:
        """The driver's connection, with what is held sent first."""
        self.flush()
        return self._uow.connection

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Hold a write to merge it with the next ones of the same text; run any other
        statement now, after what is held."""
        if sql != self._sql:
            self.flush()
            if not _WRITE.match(sql) or _RETURNING.search(sql):
                return self._uow.execute(sql, params)
            self._sql = sql
        self._count += 1
        self._params.append(params)
        self._numbers.append(self._count)
        return HeldResult(self, self._count)

    def flush(self) -> None:
        """Send the held run: one statement alone, several as one ``executemany``."""
        sql, params = self._sql, self._params
        self._sql, self._params, self._numbers = "", [], []
        if len(params) == 1:
            self._uow.execute(sql, params[0])
        elif params:
            self.merged += len(params)
            execute_many(self._uow, sql, params)

    def result_of(self, number: int) -> Any:
        """The cursor of held statement ``number``: it must be the last one held (a
        handler reads its result before it writes again)."""
        if not self._numbers or self._numbers[-1] != number:
            raise ProjectionError(
                "a handler read the result of a write after it made another one; the "
                "runner merges consecutive writes of the same SQL into one executemany, "
                "so read a statement's result (rowcount, fetch) before the next execute"
            )
        sql, params = self._sql, self._params.pop()
        self._numbers.pop()
        self.flush()  # the run before it
        return self._uow.execute(sql, params)

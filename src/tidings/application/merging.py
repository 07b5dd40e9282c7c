"""The unit of work a batch's handlers write through: runs of one statement merged.

A handler is a function of one event (or message), so a batch of 500 is 500
``uow.execute`` calls; most of them are the same write with other parameters (an upsert
per event). This wrapper holds each write (INSERT, UPDATE or DELETE without RETURNING) and
lets the next ones with the same SQL join it; the run goes to the database as one
``executemany`` (sqlite3's loop in C, psycopg's batch) when a statement of another text
comes, when the connection or the transaction is asked for (the handler's next
statements then go one at a time), or at the end of the batch.
So the database sees the statements in the order the handlers made them, and only
consecutive statements of the same text are merged. What ``execute`` returns for a held
write is sent alone (after the run before it) the moment the handler reads it
(``rowcount``, a fetch), so a handler that looks at its result sees its own statement's,
as without merging. The handlers stay per-event functions and read as before: nothing to
declare. Used by the projection runner and the consumer's batch pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from tidings.application.statements import for_psycopg
from tidings.errors import HeldWriteError, StorageError
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
    """``handler(event, work)`` sees this in place of its unit of work; ``flush()`` sends
    what is held (call it before the batch's own bookkeeping and the commit).

    One ``MergingWork`` serves a whole batch, so the writes of successive handlers merge:
    ``serve(uow)`` makes the next handler's unit of work the one whose members
    (``track``, ``send``, ...) it sees. What is held goes out through ``sender`` (by
    default the first unit of work), which must stay open until the last flush and work
    in the same transaction as every unit of work served.
    """

    def __init__(self, uow: Any, sender: Any = None) -> None:
        self._uow = uow
        self._sender = uow if sender is None else sender
        self._sql = ""
        self._params: list[Params] = []
        self._numbers: list[int] = []  # the HeldResult number of each held statement
        self._count = 0
        self.merged = 0  # statements sent in a run of two or more
        self._direct = False  # the handler took the transaction or connection: hold nothing

    def serve(self, uow: Any) -> None:
        """Hand the next handler ``uow``'s members; what is held stays held."""
        self._uow, self._direct = uow, False

    def __getattr__(self, name: str) -> Any:
        """The unit of work's other members (``dialect``, ``track``, ...); what is held
        goes first, so a write made through them comes after it."""
        if name != "dialect":
            self.flush()
        return getattr(self._uow, name)

    @property
    def connection(self) -> Any:
        """The driver's connection, with what is held sent first; the handler's next
        statements go one at a time (see ``_by_hand``)."""
        self._by_hand()
        return self._uow.connection

    @property
    def transaction(self) -> Any:
        """The transaction, with what is held sent first; the handler's next statements
        go one at a time (see ``_by_hand``)."""
        self._by_hand()
        return self._uow.transaction

    def _by_hand(self) -> None:
        """A handler that reaches for the transaction or the connection may open its own
        savepoint: a write held inside it would be sent after it ended, and not undone
        if it rolled back. So nothing of this handler is held any more (until ``serve``
        hands the next one over)."""
        self.flush()
        self._direct = True

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Hold a write to merge it with the next ones of the same text; run any other
        statement now, after what is held."""
        if sql != self._sql or self._direct:
            self.flush()
            if self._direct or not _WRITE.match(sql) or _RETURNING.search(sql):
                return self._sender.execute(sql, params)
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
            self._sender.execute(sql, params[0])
        elif params:
            self.merged += len(params)
            execute_many(self._sender, sql, params)

    def result_of(self, number: int) -> Any:
        """The cursor of held statement ``number``: it must be the last one held (a
        handler reads its result before it writes again)."""
        if not self._numbers or self._numbers[-1] != number:
            raise HeldWriteError(
                "a handler read the result of a write after it made another one; the "
                "writes of a batch are merged, consecutive ones of the same SQL into one "
                "executemany, so read a statement's result (rowcount, fetch) before the "
                "next execute"
            )
        sql, params = self._sql, self._params.pop()
        self._numbers.pop()
        self.flush()  # the run before it
        return self._sender.execute(sql, params)


def execute_many(uow: Any, sql: str, params: Sequence[Params]) -> None:
    """Run ``sql`` (``:name`` or ``?`` style) once per item of ``params`` in ``uow``'s
    transaction, as one ``executemany`` of the driver."""
    if uow.dialect == "memory":  # its transaction begins at its first execute: go through it
        for one in params:
            uow.execute(sql, one)
        return
    connection = uow.connection  # the real unit of work's
    try:
        if uow.dialect == "postgresql":
            with connection.cursor() as cursor:
                cursor.executemany(for_psycopg(sql), params)
        else:
            connection.executemany(sql, params)
    except Exception as exc:  # the driver's error, as ours, naming the statement
        raise StorageError(f"a batch of {len(params)} statements failed: {exc} ({sql})") from exc

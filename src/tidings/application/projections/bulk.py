"""The unit of work a rebuild's handlers write through: shadow tables, bulk inserts.

Each statement has the projection's tables renamed to their shadows. An INSERT into one
of them (naming no other table, with no SELECT and no RETURNING) is deferred, and a run of
the same INSERT goes to the database as one ``executemany`` (sqlite3's loop in C, or
psycopg's pipelined batch): most of a replay is such inserts. Any other statement (an
UPDATE, a DELETE, a SELECT, an INSERT naming two tables) first sends everything deferred,
and an INSERT of another text into the same table sends that table's run first, so each
table sees its writes in the order the handlers made them. Runs of different tables may
go in another order than they were made: single-table inserts do not see each other
(foreign keys or triggers between read-model tables would; keep them out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tidings.application.merging import execute_many
from tidings.errors import ProjectionError
from tidings.ports import Params


class Deferred:
    """What ``execute`` returns for a deferred INSERT: no result to read yet."""

    rowcount = -1

    def _refuse(self, *_args: Any) -> Any:
        raise ProjectionError(
            "during a rebuild an INSERT is sent in bulk, later: its result cannot be read "
            "(write the handler without reading an INSERT's cursor)"
        )

    fetchone = fetchall = fetchmany = _refuse


class BulkWork:
    """``handler(work, event)`` sees this in place of the unit of work during a rebuild."""

    def __init__(self, uow: Any, shadows: Mapping[str, str]) -> None:
        self._uow, self._shadows = uow, shadows
        self._plans: dict[str, tuple[str, str | None]] = {}
        self._runs: dict[str, tuple[str, list[Params]]] = {}  # table: (sql, parameters)
        self.sent_in_bulk = 0

    @property
    def dialect(self) -> str:
        """The unit of work's dialect."""
        return str(self._uow.dialect)

    @property
    def connection(self) -> Any:
        """Refused: statements sent on the driver's connection would miss the renaming."""
        raise ProjectionError(
            "during a rebuild a handler writes through uow.execute only: what goes through "
            "uow.connection would write the live tables, not the shadow ones"
        )

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run (or defer, for a single-table INSERT) one statement on the shadow tables."""
        plan = self._plans.get(sql)
        if plan is None:
            plan = self._plans[sql] = self._plan(sql)
        shadow_sql, table = plan
        if table is None:
            self.flush()
            return self._uow.execute(shadow_sql, params)
        run = self._runs.get(table)
        if run is not None and run[0] != shadow_sql:
            self._send(table)
            run = None
        if run is None:
            self._runs[table] = (shadow_sql, [params])
        else:
            run[1].append(params)
        return Deferred()

    def flush(self) -> None:
        """Send everything deferred."""
        for table in list(self._runs):
            self._send(table)

    def _send(self, table: str) -> None:
        sql, params = self._runs.pop(table)
        if len(params) == 1:
            self._uow.execute(sql, params[0])
            return
        self.sent_in_bulk += len(params)
        execute_many(self._uow, sql, params)

    def _plan(self, sql: str) -> tuple[str, str | None]:
        """The statement on the shadows, and the shadow table it inserts into if it can
        be deferred (None: run it now)."""
        shadow_sql = renamed(sql, self._shadows)
        if not re.match(r"\s*INSERT\s+INTO\b", sql, re.I):
            return shadow_sql, None
        if re.search(r"\b(SELECT|RETURNING|WITH)\b", sql, re.I):
            return shadow_sql, None
        named = {
            s
            for s in self._shadows.values()
            if re.search(rf"(?<![\w$]){re.escape(s)}(?![\w$])", shadow_sql, re.I)
        }
        return shadow_sql, (named.pop() if len(named) == 1 else None)


def renamed(sql: str, names: Mapping[str, str]) -> str:
    """``sql`` with each name of ``names`` (an identifier, quoted or not, any case)
    replaced, outside single-quoted string literals."""
    if not names:
        return sql
    words = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf'(?<![\w$])("?)({words})\1(?![\w$])', re.I)
    parts = re.split(r"('(?:[^']|'')*')", sql)
    for i in range(0, len(parts), 2):  # the odd parts are the literals
        parts[i] = pattern.sub(lambda m: m[1] + names[m[2].lower()] + m[1], parts[i])
    return "".join(parts)

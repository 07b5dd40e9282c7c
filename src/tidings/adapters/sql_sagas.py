"""The saga log in SQL: saga rows and their transitions, written through a unit of work.

It speaks the unit of work's ``:name`` statements, so one adapter serves SQLite,
PostgreSQL and memory:// (whose unit of work runs your statements in an in-process
SQLite; there the tables are made on first use, as ``ensure_tables`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import msgspec

from tidings.adapters.sql import split_statements
from tidings.domain.saga_state import SagaRow, Transition
from tidings.errors import SagaConflictError

_COLUMNS = (
    "saga_id, saga_type, definition_version, state, data, step, attempt, started,"
    " executed, compensated, errors, version, wake_at, deadline_at, step_deadline_at,"
    " waiting, unanswered, correlation_id"
)
_TRANSITION_COLUMNS = "saga_id, seq, sub, kind, step, at, detail, by_whom, amount"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
MEMORY_TABLES = {
    "sagas": "tidings_sagas",
    "prefix": "tidings_",
    "saga_transitions": "tidings_saga_transitions",
}


def ddl(names: Mapping[str, str]) -> list[str]:
    """The statements that create the saga tables under ``names``."""
    text = resources.files("tidings.adapters.sqlite").joinpath("sagas.sql").read_text()
    return split_statements(text.format(**names))


class SqlSagaLog:
    """Saga rows and transitions in the tables ``tables['sagas']`` and
    ``tables['saga_transitions']``; every method runs in the unit of work it is given."""

    def __init__(self, tables: Mapping[str, str]) -> None:
        self._sagas = tables["sagas"]
        self._transitions = tables["saga_transitions"]
        # Every write runs one of these: made once here, not per transition.
        self._insert = (
            f"INSERT INTO {self._sagas} ({_COLUMNS}) VALUES (:saga_id, :saga_type,"
            " :definition_version, :state, :data, :step, :attempt, :started, :executed,"
            " :compensated, :errors, :version, :wake_at, :deadline_at, :step_deadline_at,"
            " :waiting, :unanswered, :correlation_id)"
        )
        self._moved = (
            f"UPDATE {self._sagas} SET state = :state, data = :data, step = :step,"
            " attempt = :attempt, started = :started, executed = :executed,"
            " compensated = :compensated, errors = :errors, version = :version,"
            " wake_at = :wake_at, definition_version = :definition_version,"
            " deadline_at = :deadline_at, step_deadline_at = :step_deadline_at,"
            " waiting = :waiting, unanswered = :unanswered"
            " WHERE saga_id = :saga_id AND version = :expected"
        )

    def create(self, uow: Any, row: SagaRow, transitions: list[Transition]) -> None:
        """Insert a new saga and its first transitions."""
        insert, params = self._insert, _params(row)
        if uow.dialect == "postgresql" and transitions:  # one round trip for both
            values, more = _values(row, transitions)
            uow.execute(
                f"WITH made AS ({insert} RETURNING 1) INSERT INTO {self._transitions}"
                f" ({_TRANSITION_COLUMNS}) SELECT v.* FROM (VALUES {values})"
                f" AS v ({_TRANSITION_COLUMNS}) WHERE EXISTS (SELECT 1 FROM made)",
                {**params, **more},
            )
            return
        uow.execute(insert, params)
        self._record(uow, row, transitions)

    def update(
        self, uow: Any, row: SagaRow, expected_version: int, transitions: list[Transition]
    ) -> None:
        """Write ``row`` (whose version is ``expected_version + 1``) if the stored saga is
        still at ``expected_version``, with its transitions; else raise
        ``SagaConflictError`` (the caller's transaction then rolls back)."""
        params = _params(row)
        params["expected"] = expected_version
        moved = self._moved
        if uow.dialect == "postgresql" and transitions:
            # The update and its transitions in one statement (one round trip): the
            # transitions are inserted only if the update found the saga at its version,
            # so "nothing inserted" is the conflict.
            values, more = _values(row, transitions)
            cursor = uow.execute(
                f"WITH moved AS ({moved} RETURNING 1) INSERT INTO {self._transitions}"
                f" ({_TRANSITION_COLUMNS}) SELECT v.* FROM (VALUES {values})"
                f" AS v ({_TRANSITION_COLUMNS}) WHERE EXISTS (SELECT 1 FROM moved)",
                {**params, **more},
            )
            if cursor.rowcount != len(transitions):
                raise SagaConflictError(
                    f"saga {row.saga_id} moved past version {expected_version} elsewhere"
                )
            return
        cursor = uow.execute(moved, params)
        if cursor.rowcount != 1:
            raise SagaConflictError(
                f"saga {row.saga_id} moved past version {expected_version} elsewhere"
            )
        self._record(uow, row, transitions)

    def _record(self, uow: Any, row: SagaRow, transitions: list[Transition]) -> None:
        """Insert the transitions of one write in one statement (one round trip)."""
        if not transitions:
            return
        values, params = _values(row, transitions)
        uow.execute(
            f"INSERT INTO {self._transitions} ({_TRANSITION_COLUMNS}) VALUES {values}", params
        )

    def get(self, uow: Any, saga_id: str) -> SagaRow | None:
        """The saga ``saga_id`` as stored, or None."""
        found = uow.execute(
            f"SELECT {_COLUMNS} FROM {self._sagas} WHERE saga_id = :id", {"id": saga_id}
        ).fetchone()
        return None if found is None else _row(found)

    def due(self, uow: Any, now: float, states: tuple[str, ...], limit: int) -> list[str]:
        """Ids of sagas in ``states`` whose wake-up time has come, oldest wake-up first."""
        marks = ", ".join(f":s{i}" for i in range(len(states)))
        params: dict[str, Any] = {f"s{i}": s for i, s in enumerate(states)}
        params.update(now=now, limit=limit)
        rows = uow.execute(
            f"SELECT saga_id FROM {self._sagas} WHERE state IN ({marks})"
            " AND wake_at <= :now ORDER BY wake_at, saga_id LIMIT :limit",
            params,
        ).fetchall()
        return [r[0] for r in rows]

    def next_wake(self, uow: Any, states: tuple[str, ...], after: float) -> float | None:
        """The earliest wake-up time later than ``after`` of a saga in ``states``."""
        marks = ", ".join(f":s{i}" for i in range(len(states)))
        params: dict[str, Any] = {f"s{i}": s for i, s in enumerate(states)}
        params["after"] = after
        found = uow.execute(
            f"SELECT MIN(wake_at) FROM {self._sagas} WHERE state IN ({marks}) AND wake_at > :after",
            params,
        ).fetchone()
        return None if found is None or found[0] is None else float(found[0])

    def counts(self, uow: Any) -> dict[str, int]:
        """How many sagas are in each state."""
        rows = uow.execute(
            f"SELECT state, COUNT(*) FROM {self._sagas} GROUP BY state", {}
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def listing(self, uow: Any, state: str | None, limit: int) -> list[SagaRow]:
        """Sagas, in one state or all, by id."""
        where = "" if state is None else " WHERE state = :state"
        rows = uow.execute(
            f"SELECT {_COLUMNS} FROM {self._sagas}{where} ORDER BY saga_id LIMIT :limit",
            {"state": state, "limit": limit} if state else {"limit": limit},
        ).fetchall()
        return [_row(r) for r in rows]

    def history(self, uow: Any, saga_id: str) -> list[Transition]:
        """Every transition of a saga, in the order they happened."""
        rows = uow.execute(
            f"SELECT kind, step, at, detail, by_whom, amount FROM {self._transitions}"
            " WHERE saga_id = :id ORDER BY seq, sub",
            {"id": saga_id},
        ).fetchall()
        return [Transition(r[0], r[1], float(r[2]), r[3], r[4], float(r[5])) for r in rows]

    def total(self, uow: Any, kind: str, saga_type: str | None) -> tuple[int, float]:
        """How many transitions of ``kind`` (for one saga type, or all) and their amounts."""
        sql = (
            f"SELECT COUNT(*), COALESCE(SUM(t.amount), 0) FROM {self._transitions} t"
            f" JOIN {self._sagas} s ON s.saga_id = t.saga_id WHERE t.kind = :kind"
        )
        params: dict[str, Any] = {"kind": kind}
        if saga_type is not None:
            sql += " AND s.saga_type = :type"
            params["type"] = saga_type
        count, amount = uow.execute(sql, params).fetchone()
        return int(count), float(amount)


def _values(row: SagaRow, transitions: list[Transition]) -> tuple[str, dict[str, Any]]:
    """The rows of ``transitions`` as a VALUES list (typed, so that PostgreSQL reads them
    alike in an INSERT and in a SELECT), and their parameters."""
    params: dict[str, Any] = {"t_saga": row.saga_id, "t_seq": row.version}
    for sub, t in enumerate(transitions):
        values = (t.kind, t.step, t.at, t.detail, t.by, t.amount)
        params.update(zip(_names(sub), values, strict=True))
    return _values_list(len(transitions)), params


@cache
def _names(sub: int) -> tuple[str, ...]:
    """The parameter names of the transition at position ``sub`` of one write."""
    return tuple(f"{column}{sub}" for column in ("kind", "step", "at", "detail", "by", "amount"))


@cache
def _values_list(count: int) -> str:
    """The VALUES rows of ``count`` transitions (the same text for every write of that
    many: made once)."""
    return ", ".join(
        f"(CAST(:t_saga AS TEXT), CAST(:t_seq AS INTEGER), {sub},"
        f" CAST(:kind{sub} AS TEXT), CAST(:step{sub} AS TEXT),"
        f" CAST(:at{sub} AS DOUBLE PRECISION), CAST(:detail{sub} AS TEXT),"
        f" CAST(:by{sub} AS TEXT), CAST(:amount{sub} AS DOUBLE PRECISION))"
        for sub in range(count)
    )


def _params(row: SagaRow) -> dict[str, Any]:
    return {
        "saga_id": row.saga_id,
        "saga_type": row.saga_type,
        "definition_version": row.definition_version,
        "state": row.state,
        "data": _json(row.data),
        "step": row.step,
        "attempt": row.attempt,
        "started": int(row.started),
        "executed": _json(row.executed),
        "compensated": _json(row.compensated),
        "errors": _json(row.errors),
        "version": row.version,
        "wake_at": row.wake_at,
        "deadline_at": row.deadline_at,
        "step_deadline_at": row.step_deadline_at,
        "waiting": row.waiting,
        "unanswered": _json(row.unanswered),
        "correlation_id": row.correlation_id,
    }


def _json(value: Any) -> str:
    """A JSON column's text (msgspec: several times faster than the json module)."""
    return _encode(value).decode()


def _row(r: Any) -> SagaRow:
    return SagaRow(
        saga_id=r[0],
        saga_type=r[1],
        definition_version=int(r[2]),
        state=r[3],
        data=_decode(r[4]),
        step=int(r[5]),
        attempt=int(r[6]),
        started=bool(r[7]),
        executed=_decode(r[8]),
        compensated=_decode(r[9]),
        errors=_decode(r[10]),
        version=int(r[11]),
        wake_at=float(r[12]),
        deadline_at=float(r[13]),
        step_deadline_at=float(r[14]),
        waiting=r[15],
        unanswered=_decode(r[16]),
        correlation_id=r[17],
    )

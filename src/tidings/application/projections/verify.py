"""A rebuild's verification: the shadow tables against the live ones, row by row.

Each table's rows are compared as multisets (``GROUP BY`` every column, with a count, on
both sides, then ``EXCEPT`` both ways), so a row twice in one and once in the other is
a difference too; on PostgreSQL every value is compared as text, which also covers types
without equality (``json``). Differences are paired by primary key where the table has
one, to show the key with the live and the new row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHOWN = 10  # differences listed; all are counted


@dataclass(frozen=True)
class Difference:
    """One row that differs: ``live`` or ``new`` is None where the row is missing."""

    table: str
    key: tuple[Any, ...]
    live: tuple[Any, ...] | None
    new: tuple[Any, ...] | None
    columns: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: table, key, live vs new."""
        live = "missing" if self.live is None else repr(self.live)
        new = "missing" if self.new is None else repr(self.new)
        head = f"{self.table} {self.key!r}" if self.key else self.table
        cols = f" ({', '.join(self.columns)})" if self.columns else ""
        return f"{head}{cols}: live {live}, new {new}"


def differences(
    uow: Any, shadows: Mapping[str, str], live_tables: Sequence[str]
) -> tuple[list[Difference], int]:
    """The first differences between each live table and its shadow, and how many."""
    found: list[Difference] = []
    total = 0
    for table, shadow in shadows.items():
        if table not in live_tables:
            count = int(uow.execute(f"SELECT count(*) FROM {shadow}").fetchone()[0])
            if count:
                found.append(Difference(table, ("new table",), None, (f"{count} rows",)))
                total += count
            continue
        live_cols, key = _columns(uow, table)
        new_cols, _ = _columns(uow, shadow)
        if sorted(live_cols) != sorted(new_cols):
            found.append(Difference(table, ("columns",), tuple(live_cols), tuple(new_cols)))
            total += 1
            continue
        table_found, table_total = _rows(uow, table, shadow, live_cols, key)
        found += table_found
        total += table_total
    return found[:SHOWN], total


def _rows(
    uow: Any, live: str, shadow: str, columns: list[str], key: list[str]
) -> tuple[list[Difference], int]:
    text = uow.dialect == "postgresql"
    cols = ", ".join(
        f"{f'CAST({c} AS TEXT)' if text else c} AS c{i}" for i, c in enumerate(columns)
    )
    groups = ", ".join(str(i + 1) for i in range(len(columns)))

    def counted(t: str) -> str:
        return f"SELECT {cols}, count(*) AS n FROM {t} GROUP BY {groups}"

    only = {
        side: f"SELECT * FROM ({counted(a)} EXCEPT {counted(b)}) d"
        for side, a, b in (("live", live, shadow), ("new", shadow, live))
    }
    # a changed row is one difference: rows of either side, counted once per key
    picked = ", ".join(f"c{columns.index(k)}" for k in key) or "*"
    union = " UNION ".join(f"SELECT {picked} FROM ({sql}) {side}" for side, sql in only.items())
    if not key:  # a multiset: every row of either side that the other lacks
        union = " UNION ALL ".join(f"SELECT * FROM ({sql}) {side}" for side, sql in only.items())
    total = int(uow.execute(f"SELECT count(*) FROM ({union}) u").fetchone()[0])
    if not total:
        return [], 0
    at = [columns.index(k) for k in key] or list(range(len(columns)))
    rows = {
        side: [tuple(r) for r in uow.execute(f"{sql} ORDER BY {groups} LIMIT {SHOWN}").fetchall()]
        for side, sql in only.items()
    }
    trim = len(columns) if key else len(columns) + 1  # with a key every count is 1
    live_rows = {tuple(r[i] for i in at): r[:trim] for r in rows["live"]}
    new_rows = {tuple(r[i] for i in at): r[:trim] for r in rows["new"]}
    found = [
        Difference(
            live,
            k,
            live_rows.get(k),
            new_rows.get(k),
            tuple(columns) if key else (*columns, "count"),
        )
        for k in sorted({*live_rows, *new_rows}, key=repr)
    ]
    return found[:SHOWN], total


def _columns(uow: Any, table: str) -> tuple[list[str], list[str]]:
    """The table's column names, and those of its primary key (in key order)."""
    if uow.dialect == "postgresql":
        cols = uow.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :t"
            " AND table_schema = current_schema() ORDER BY ordinal_position",
            {"t": table},
        ).fetchall()
        key = uow.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indisprimary"
            " AND i.indrelid = to_regclass(:t)"
            " ORDER BY array_position(CAST(i.indkey AS int2[]), a.attnum)",
            {"t": table},
        ).fetchall()
        return [str(c[0]) for c in cols], [str(k[0]) for k in key]
    info = uow.execute(f"PRAGMA table_info({table})").fetchall()
    key_cols = sorted((int(r[5]), str(r[1])) for r in info if int(r[5]))
    return [str(r[1]) for r in info], [name for _, name in key_cols]

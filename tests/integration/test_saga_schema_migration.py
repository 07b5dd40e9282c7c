"""The sagas schema part, version 1 to 2: a database whose saga tables an older tidings
made gains the deadline and reply columns on connect, and its running sagas go on; version
2 to 3: it gains the partial indexes the metrics count failed compensations through."""

from __future__ import annotations

from typing import Any

import tidings
from tests.integration.test_schema_migration import part_versions, url_and_options
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext

__all__ = ["url_and_options"]  # the SQLite and PostgreSQL fixture

V1_SAGAS = """CREATE TABLE {sagas} (
    saga_id TEXT PRIMARY KEY, saga_type TEXT NOT NULL, definition_version INTEGER NOT NULL,
    state TEXT NOT NULL, data TEXT NOT NULL, step INTEGER NOT NULL, attempt INTEGER NOT NULL,
    started INTEGER NOT NULL, executed TEXT NOT NULL, compensated TEXT NOT NULL,
    errors TEXT NOT NULL, version INTEGER NOT NULL, wake_at DOUBLE PRECISION NOT NULL)"""


def make_sagas_version_1(store: tidings.Store) -> None:
    """Put back the saga table as version 1 made it, with one saga waiting on a retry
    timer (its first try of step ``pay`` failed), and the version row saying 1."""
    database = store.database
    sagas = database.tables["sagas"]  # type: ignore[attr-defined]
    versions = database.tables["schema_version"]  # type: ignore[attr-defined]
    with database.transaction() as tx:
        tx.execute(f"DROP TABLE {sagas}")
        tx.execute(V1_SAGAS.format(sagas=sagas))
        tx.execute(
            f"INSERT INTO {sagas} VALUES ('old-1', 'old', 1, 'RUNNING', '{{\"n\": 1}}', 0, 1, 0,"
            ' \'[]\', \'[]\', \'[{"step": "pay", "error": "down"}]\', 3, 1001.0)'
        )
        tx.execute(f"UPDATE {versions} SET version = 1 WHERE component = 'sagas'")


def test_a_version_1_saga_table_gains_the_deadline_columns_and_its_sagas_go_on(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """After the upgrade the old saga reads with no deadlines and no reply awaited, and
    completes on its retry; a new saga with a deadline runs beside it."""
    url, options = url_and_options
    with tidings.connect(url, **options) as old:
        make_sagas_version_1(old)
    done: list[int] = []

    def pay(ctx: StepContext) -> None:
        done.append(ctx.data["n"])

    definition = SagaDefinition("old", [Step("pay", pay, retry=RetryPolicy(1))])
    with tidings.connect(url, **options) as upgraded:
        assert part_versions(upgraded)["sagas"] == 3
        sagas = upgraded.sagas([definition], clock=lambda: 1_001.0)
        assert sagas.run_once() > 0
        end = sagas.get("old-1")
        assert end is not None
        assert (end.state, end.executed_steps, done) == ("COMPLETED", ["pay"], [1])
        timed = SagaDefinition("timed", [Step("pay", pay, deadline=5)], deadline=60)
        assert sagas.start(timed, {"n": 2}).state == "COMPLETED"
    with tidings.connect(url, **options) as again:  # nothing left to do
        assert part_versions(again)["sagas"] == 3


METRICS_INDEXES = ("saga_transitions_compensation_failed", "saga_transitions_discrepancy")


def metrics_indexes(store: tidings.Store) -> list[bool]:
    """Whether each partial index of version 3 exists."""
    database: Any = store.database
    prefix = database.tables["sagas"].removesuffix("sagas")
    if database.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
        return [bool(database.query(sql, (prefix + name,))) for name in METRICS_INDEXES]
    return [
        database.query("SELECT to_regclass(%s)", (prefix + name,))[0][0] is not None
        for name in METRICS_INDEXES
    ]


def test_a_version_2_saga_part_gains_the_indexes_metrics_count_through(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """A database at sagas version 2 (no partial indexes) is at version 3 with both after
    the next connect."""
    url, options = url_and_options
    with tidings.connect(url, **options) as old:
        database: Any = old.database
        prefix = database.tables["sagas"].removesuffix("sagas")
        with database.transaction() as tx:
            for name in METRICS_INDEXES:
                tx.execute(f"DROP INDEX {prefix}{name}")
            tx.execute(
                f"UPDATE {database.tables['schema_version']} SET version = 2"
                " WHERE component = 'sagas'"
            )
        assert metrics_indexes(old) == [False, False]
    with tidings.connect(url, **options) as upgraded:
        assert part_versions(upgraded)["sagas"] == 3
        assert metrics_indexes(upgraded) == [True, True]

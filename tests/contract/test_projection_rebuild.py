"""Blue/green rebuilds on every backend: the new version is built into shadow tables while
the live one serves, equals a fresh build, is verified row by row (a wrong version is
refused), swaps atomically, rolls back, and keeps its indexes apart."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from contextlib import closing
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection, VerifyError
from tidings.application.projections.bulk import BulkWork, renamed
from tidings.application.projections.verify import differences
from tidings.errors import ProjectionConflictError, ProjectionError
from tidings.testing.contract import Counted, Counter, Named

TAG = ["x"]


@pytest.fixture(autouse=True)
def _unique_tables() -> None:
    TAG[0] = uuid.uuid4().hex[:8]


def tab(kind: str) -> str:
    return f"rb_{TAG[0]}_{kind}"


def totals(version: int = 1, *, bug: bool = False, bump: int = 0, name: str = "") -> Projection:
    """Per counter its total and name (``rb_*_totals``), and each event in ``rb_*_seen``.
    ``bug``: the new version drops the step of 7s; ``bump``: adds it to every value
    written (a version whose results differ on purpose)."""
    table, seen = tab(name or "totals"), tab(f"{name}seen")

    def counted(uow: Any, e: Counted) -> None:
        step = 0 if bug and e.step == 7 else e.step
        uow.execute(
            f"INSERT INTO {table} (id, total, name) VALUES (:id, :s, '') ON CONFLICT (id)"
            f" DO UPDATE SET total = {table}.total + excluded.total",
            {"id": e.aggregate_id, "s": step + bump},
        )
        uow.execute(
            f"INSERT INTO {seen} (event_id, step) VALUES (:e, :s)",
            {"e": e.event_id, "s": e.step + bump},
        )

    def named(uow: Any, e: Named) -> None:
        uow.execute(
            f"UPDATE {table} SET name = :n WHERE id = :id", {"id": e.aggregate_id, "n": e.name}
        )

    return Projection(
        f"rb-{name or 'totals'}",
        {Counted: counted, Named: named},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, total INTEGER, name TEXT)",
            f"CREATE TABLE IF NOT EXISTS {seen} (event_id TEXT, step INTEGER)",
        ],
        indexes=[f"CREATE INDEX {tab('by_total')} ON {table} (total)"] if not name else [],
        version=version,
    )


def rows(store: tidings.Store, table: str) -> list[tuple[Any, ...]]:
    with store.unit_of_work() as uow:
        return sorted(tuple(r) for r in uow.execute(f"SELECT * FROM {table}").fetchall())


def write(store: tidings.Store, steps: list[int], name: str = "") -> Counter:
    counter = Counter(f"c-{uuid.uuid4().hex[:16]}")
    for step in steps:
        counter.increment(step)
    if name:
        counter.rename(name)
    with store.unit_of_work() as uow:
        uow.track(counter)
    return counter


def catch_up(runner: Any) -> None:
    while runner.run_once():
        pass


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


def test_a_rebuild_serves_the_live_version_throughout_and_ends_equal_to_a_fresh_build(
    store: tidings.Store,
) -> None:
    """While the shadow is built, queries read the live tables and the live runner goes
    on applying new events to them; after the swap the tables under the same names hold
    the new version, equal to a fresh build, and the checkpoint has its version."""
    for i in range(12):
        write(store, [i, 7, 3], name=f"n{i}")
    live = store.projections([totals(1)], batch=5)
    catch_up(live)
    before = rows(store, tab("totals"))
    job = store.rebuild(totals(2), batch=7)
    job.begin()
    assert job.step() == 7
    assert rows(store, tab("totals")) == before  # the live tables serve, whole
    assert len(rows(store, tab("totals") + "__new")) < len(before)
    statuses = {s.name: s for s in live.status()}
    assert statuses["rb-totals~rebuild"].state == "rebuilding"
    assert statuses["rb-totals~rebuild"].position == 7
    assert statuses["rb-totals~rebuild"].version == 2
    assert "rebuilding  position 7 of" in statuses["rb-totals~rebuild"].describe()
    write(store, [5, 5])  # arrives during the rebuild: the live runner applies it
    catch_up(live)
    assert len(rows(store, tab("totals"))) == len(before) + 1
    job.catch_up()
    write(store, [9])  # after the shadow caught up: the swap brings it along
    catch_up(live)
    swapped = job.swap(verify=True)
    head = store.events.count()
    assert (swapped.version, swapped.position) == (2, head)
    fresh = totals(1, name="fresh")
    catch_up(store.projections([fresh]))
    assert rows(store, tab("totals")) == rows(store, tab("fresh"))
    assert rows(store, tab("seen")) == rows(store, tab("freshseen"))
    [status] = [s for s in live.status() if s.name == "rb-totals"]
    assert (status.version, status.position) == (2, head)
    with store.unit_of_work() as uow, pytest.raises(ProjectionConflictError):
        job._checkpoints.advance(  # a version 1 batch begun before the swap: rolled back
            uow, "rb-totals", start=head, end=head + 1, now=0.0, runner="v1", version=1
        )
    write(store, [4])
    assert live.run_once() == 0  # the version 1 runner leaves version 2 alone ...
    new_runner = store.projections([totals(2)])
    catch_up(new_runner)  # ... and the new code's runner goes on from the swap
    assert rows(store, tab("totals")) != rows(store, tab("fresh"))
    catch_up(store.projections([fresh]))
    assert rows(store, tab("totals")) == rows(store, tab("fresh"))


def test_verify_refuses_a_version_whose_results_differ_and_lists_the_first_rows(
    store: tidings.Store,
) -> None:
    """A new version with a bug (it drops 7s) is not swapped in: the error names the
    table, the key and the live and new rows; the live version keeps serving."""
    kept = write(store, [1, 2])
    hit = write(store, [7, 1])
    live = store.projections([totals(1)])
    catch_up(live)
    before = rows(store, tab("totals"))
    job = store.rebuild(totals(2, bug=True))
    job.begin()
    job.catch_up()
    with pytest.raises(VerifyError) as refused:
        job.swap(verify=True)
    text = str(refused.value)
    assert f"{tab('totals')} ('{hit.id}',)" in text
    # (PostgreSQL compares, and so shows, each value as text)
    assert re.search(rf"live \('{hit.id}', '?8'?, ''\), new \('{hit.id}', '?1'?, ''\)", text)
    assert kept.id not in text
    assert refused.value.total == 1
    assert rows(store, tab("totals")) == before
    [status] = [s for s in live.status() if s.name == "rb-totals"]
    assert status.version == 1
    catch_up(live)  # the live version goes on as before
    good = store.rebuild(totals(2))
    good.begin(restart=True)
    good.catch_up()
    assert good.swap(verify=True).version == 2


def test_verify_counts_rows_twice_in_one_side_and_a_changed_column_set(
    store: tidings.Store,
) -> None:
    """Rows are compared as multisets in a table without a key, and a version that
    writes other columns differs."""
    write(store, [3, 3])
    catch_up(store.projections([totals(1)]))
    doubled = store.rebuild(totals(2, bump=1))
    doubled.begin()
    doubled.catch_up()
    with pytest.raises(VerifyError) as refused:
        doubled.swap(verify=True)
    assert refused.value.total == 5  # totals: one key; seen: two rows on each side
    a, b = tab("dup"), tab("dup") + "__new"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {a} (v INTEGER)")
        uow.execute(f"CREATE TABLE {b} (v INTEGER, w INTEGER)")
        uow.execute(f"INSERT INTO {a} VALUES (1), (1)")
        uow.execute(f"INSERT INTO {b} VALUES (1, 0)")
        found, total = differences(uow, {a: b}, [a])
        assert (total, found[0].key) == (1, ("columns",))
        uow.execute(f"ALTER TABLE {b} DROP COLUMN w")
        found, total = differences(uow, {a: b}, [a])
    assert total == 2  # (1) twice against (1) once: one row-and-count on each side
    shown = [d.describe().replace("'", "") for d in found]  # text on PostgreSQL
    assert shown == [f"{a} (1,) (v, count): live (1, 2), new (1, 1)"]


def test_rollback_restores_the_old_tables_and_checkpoint_and_drop_old_removes_them(
    store: tidings.Store,
) -> None:
    """After a swap the old version is kept: rollback brings it back under the same
    names at its position; after another swap drop-old drops it, and a rebuild is
    refused while an old version is kept."""
    write(store, [1, 2, 3])
    live = store.projections([totals(1)])
    catch_up(live)
    old = rows(store, tab("totals"))
    job = store.rebuild(totals(2, bump=100))
    job.begin()
    job.catch_up()
    job.swap()
    assert rows(store, tab("totals")) != old
    with pytest.raises(ProjectionError, match="drop-old"):
        store.rebuild(totals(3)).begin()
    back = job.rollback()
    assert (back.version, back.position) == (1, 3)
    assert rows(store, tab("totals")) == old
    with pytest.raises(ProjectionError, match="no old version"):
        job.rollback()
    catch_up(live)  # version 1 runs again
    again = store.rebuild(totals(2))
    again.begin()
    again.catch_up()
    again.swap()
    assert again.drop_old() == [tab("totals") + "__old", tab("seen") + "__old"]
    with store.unit_of_work() as uow, pytest.raises(tidings.StorageError):
        uow.execute(f"SELECT * FROM {tab('totals')}__old")
    with pytest.raises(ProjectionError, match="nothing to drop"):
        again.drop_old()


def test_indexes_are_made_after_the_load_under_a_name_the_live_table_does_not_hold(
    store: tidings.Store,
) -> None:
    """The live table has its index under its own name; the first rebuild's index takes
    ``__alt``, the next one's the name again, so each version keeps one index."""
    write(store, [1])
    catch_up(store.projections([totals(1)]))

    def indexes() -> set[str]:
        with store.unit_of_work() as uow:
            if uow.dialect == "postgresql":
                found = uow.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = :t"
                    " AND schemaname = current_schema()",
                    {"t": tab("totals")},
                ).fetchall()
            else:
                found = uow.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t",
                    {"t": tab("totals")},
                ).fetchall()
        return {str(r[0]) for r in found if "pkey" not in r[0] and "autoindex" not in r[0]}

    assert indexes() == {tab("by_total")}
    for version, expected in ((2, tab("by_total") + "__alt"), (3, tab("by_total"))):
        job = store.rebuild(totals(version))
        job.begin()
        job.catch_up()
        job.swap()
        assert indexes() == {expected}
        job.drop_old()


def test_a_handler_that_fails_during_a_rebuild_stops_it_at_its_checkpoint(
    store: tidings.Store,
) -> None:
    """The batch rolls back and the error names the event; fixed, it goes on."""
    write(store, [1, 2])
    write(store, [13])
    broken = {"on": True}

    def counted(uow: Any, e: Counted) -> None:
        if e.step == 13 and broken["on"]:
            raise ValueError("no thirteens")
        uow.execute(f"INSERT INTO {tab('t')} (s) VALUES (:s)", {"s": e.step})

    projection = Projection(
        "rb-fails", {Counted: counted}, schema=[f"CREATE TABLE {tab('t')} (s INTEGER)"]
    )
    job = store.rebuild(projection, batch=2)
    job.begin()
    assert job.step() == 2
    with pytest.raises(ProjectionError, match=r"position 3 .*ValueError: no thirteens"):
        job.step()
    assert job.progress().position == 2
    broken["on"] = False
    assert store.rebuild(projection).begin().position == 2  # goes on
    job.catch_up()
    assert job.swap().position == 3  # never ran live: nothing to keep
    assert rows(store, tab("t")) == [(1,), (2,), (13,)]


def test_a_reader_never_sees_a_half_swapped_read_model(
    make_sql_store: MakeStore, tmp_path: Any
) -> None:
    """The swap is held open after its renames: a reader on its own connection sees
    both old tables (SQLite, its snapshot) or waits and sees both new (PostgreSQL),
    never one of each; after the commit it sees both new."""
    store = make_sql_store(tidings.EventRegistry([Counted, Named]))
    write(store, [1, 2])
    catch_up(store.projections([totals(1)]))
    job = store.rebuild(totals(2, bump=1000))
    job.begin()
    job.catch_up()
    held, go = threading.Event(), threading.Event()
    checkpoints = job._checkpoints
    real_remove = checkpoints.remove

    def remove_then_hold(uow: Any, name: str) -> bool:
        done = real_remove(uow, name)
        if name.endswith("~rebuild"):
            held.set()
            assert go.wait(30)
        return done

    checkpoints.remove = remove_then_hold  # type: ignore[method-assign]
    swapping = threading.Thread(target=job.swap)
    swapping.start()
    assert held.wait(30)
    query = (
        f"SELECT (SELECT max(total) FROM {tab('totals')}), (SELECT max(step) FROM {tab('seen')})"
    )
    seen: list[tuple[int, int]] = []
    reader = threading.Thread(target=lambda: seen.append(read(store, query)))
    reader.start()
    reader.join(1.0)
    go.set()
    swapping.join(30)
    reader.join(30)
    assert seen in ([(3, 2)], [(2003, 1002)])
    if store.database.dialect == "sqlite":
        assert seen == [(3, 2)]  # its snapshot began before the commit
    assert read(store, query) == (2003, 1002)


def read(store: tidings.Store, query: str) -> tuple[int, int]:
    """One query on a connection of its own, outside tidings' write path."""
    path = getattr(store.database, "path", None)
    if path is not None:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute(query).fetchone()
    else:
        import psycopg

        with psycopg.connect(store.database.url) as conn:  # type: ignore[attr-defined]
            row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_the_shadow_unit_of_work_renames_tables_only_outside_literals() -> None:
    """Whole identifiers, quoted or not, any case; not inside strings, not prefixes."""
    names = {"totals": "totals__new"}
    assert renamed(
        "INSERT INTO totals (x) SELECT 'totals' FROM Totals_x, \"totals\" WHERE totals.x = 1",
        names,
    ) == (
        "INSERT INTO totals__new (x) SELECT 'totals' FROM Totals_x, \"totals__new\""
        " WHERE totals__new.x = 1"
    )


def test_bulk_inserts_keep_each_tables_order_and_refuse_to_be_read() -> None:
    """Runs of one INSERT go as one executemany; an UPDATE first sends what is deferred;
    the cursor of a deferred INSERT cannot be read."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t__new (id INTEGER PRIMARY KEY, v INTEGER)")

    class Uow:
        dialect = "sqlite"
        connection = conn

        def execute(self, sql: str, params: Any = ()) -> Any:
            return conn.execute(sql, params)

    work = BulkWork(Uow(), {"t": "t__new"})
    for i in range(3):
        work.execute("INSERT INTO t (id, v) VALUES (:i, 1)", {"i": i})
    cursor = work.execute("INSERT INTO t (id, v) VALUES (:i, 1)", {"i": 3})
    assert cursor.rowcount == -1
    with pytest.raises(ProjectionError, match="cannot be read"):
        cursor.fetchone()
    work.execute("UPDATE t SET v = v + 10")  # sees the four rows
    work.execute("INSERT INTO t (id, v) VALUES (:i, 0)", {"i": 4})
    work.flush()
    assert conn.execute("SELECT id, v FROM t__new ORDER BY id").fetchall() == [
        (0, 11), (1, 11), (2, 11), (3, 11), (4, 0),
    ]  # fmt: skip
    assert work.sent_in_bulk == 4
    with pytest.raises(ProjectionError, match="through uow.execute only"):
        work.connection  # noqa: B018 - the property refuses


def test_a_projection_to_rebuild_must_make_tables_and_keep_names_short(
    store: tidings.Store,
) -> None:
    """Clear refusals: no tables, names too long for the shadow's suffix."""
    with pytest.raises(ProjectionError, match="creates no tables"):
        store.rebuild(Projection("rb-none", {Counted: lambda uow, e: None}))
    long = "x" * 60
    with pytest.raises(ProjectionError, match="too long"):
        store.rebuild(
            Projection(
                "rb-long", {Counted: lambda uow, e: None}, schema=[f"CREATE TABLE {long} (a INT)"]
            )
        )
    with pytest.raises(ProjectionError, match="no rebuild under way"):
        store.rebuild(totals(2)).step()
    with pytest.raises(ValueError, match="CREATE INDEX"):
        Projection("rb-bad", {Counted: lambda uow, e: None}, indexes=["DROP TABLE x"])


def test_verify_needs_both_at_one_position_and_counts_a_new_table_as_a_difference(
    store: tidings.Store,
) -> None:
    """A live version behind the shadow cannot be compared (its runner is not running):
    verify says so, a plain swap takes the shadow's position; a table the live version
    lacks is a difference; a rebuild of another version under way is not mixed in."""
    write(store, [1])
    live = store.projections([totals(1)])
    catch_up(live)
    write(store, [2])  # the live runner stops before this one
    job = store.rebuild(totals(2))
    job.begin()
    job.catch_up()
    with pytest.raises(ProjectionError, match="live read model is at position 1, behind"):
        job.swap(verify=True)
    with pytest.raises(ProjectionError, match="a rebuild to version 2 is under way"):
        store.rebuild(totals(3)).begin()
    with pytest.raises(ProjectionError, match="batch must be above 0"):
        store.rebuild(totals(2), batch=0)
    assert job.swap().position == 2
    job.drop_old()
    wider = Projection(
        "rb-totals",
        totals(3).handlers,
        schema=[*totals(3).schema, f"CREATE TABLE {tab('extra')} (a INTEGER)"],
        version=3,
    )
    catch_up(store.projections([totals(2)]))
    more = store.rebuild(wider)
    more.begin()
    more.catch_up()
    with store.unit_of_work() as uow:
        uow.execute(f"INSERT INTO {tab('extra')}__new VALUES (1)")
    with pytest.raises(VerifyError, match=rf"{tab('extra')} \('new table',\)"):
        more.swap(verify=True)

"""Schema upgrades: a database made by an older tidings is carried forward on connect."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import tidings
from tidings.adapters.sql import SCHEMA_PARTS
from tidings.testing.contract import Counted, Counter
from tidings.testing.fakes import FixedClock

T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
V1_INDEX = "CREATE INDEX {name} ON {events} (stream_id, occurred_at, version)"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url_and_options(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """Where a store lives, on SQLite and PostgreSQL (a schema of its own, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}", {}
        return
    pg_url: str = request.getfixturevalue("pg_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield pg_url, {"schema": schema}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def index_name(store: tidings.Store) -> str:
    """The qualified name of the index version 1 of the event_sourcing part had."""
    events = store.database.tables["events"]  # type: ignore[attr-defined]
    return events.removesuffix("events") + "events_by_time"


def has_index(store: tidings.Store) -> bool:
    """Whether the events_by_time index exists."""
    name = index_name(store)
    if store.database.dialect == "sqlite":
        rows = store.database.query(  # type: ignore[attr-defined]
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        )
        return bool(rows)
    return store.database.query("SELECT to_regclass(%s)", (name,))[0][0] is not None  # type: ignore[attr-defined]


def part_versions(store: tidings.Store) -> dict[str, int]:
    """component -> version, as the schema_version table holds them."""
    table = store.database.tables["schema_version"]  # type: ignore[attr-defined]
    rows = store.database.query(f"SELECT component, version FROM {table}")  # type: ignore[attr-defined]
    return {component: int(version) for component, version in rows}


def make_version_1(store: tidings.Store) -> None:
    """Turn a new store's tables into what tidings made at event_sourcing version 1: the
    same tables, plus the index events_by_time, and the version row saying 1."""
    database = store.database
    events = database.tables["events"]  # type: ignore[attr-defined]
    bare = events.rsplit(".", 1)[-1]
    versions = database.tables["schema_version"]  # type: ignore[attr-defined]
    with database.transaction() as tx:
        tx.execute(
            V1_INDEX.format(name=bare.removesuffix("events") + "events_by_time", events=events)
        )
        mark = "?" if database.dialect == "sqlite" else "%s"
        tx.execute(
            f"UPDATE {versions} SET version = 1 WHERE component = {mark}", ("event_sourcing",)
        )


def test_a_version_1_database_loses_the_time_index_and_keeps_its_events(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """Opening a database of event_sourcing version 1 drops events_by_time, records
    version 2, and every stored event, stream version and temporal read is as before."""
    url, options = url_and_options
    registry = tidings.EventRegistry([Counted])
    clock = FixedClock(T0)
    with tidings.connect(url, registry=registry, **options) as old:
        make_version_1(old)
        assert has_index(old)
        counter = Counter("c-1", clock=clock)
        for step in range(5):
            counter.increment(step)
            with old.unit_of_work() as uow:
                uow.track(counter)
            clock.advance(minutes=5)
        before = [(r.event_id, r.version, r.position) for r in old.events.read_stream("c-1")]
    with tidings.connect(url, registry=registry, **options) as upgraded:
        assert not has_index(upgraded)
        assert part_versions(upgraded) == {p.name: p.version for p in SCHEMA_PARTS}
        after = [(r.event_id, r.version, r.position) for r in upgraded.events.read_stream("c-1")]
        assert after == before
        as_of = upgraded.events.stream_info("c-1", T0 + timedelta(minutes=12))
        assert as_of.version == 3
        counter.increment(5)
        with upgraded.unit_of_work() as uow:
            uow.track(counter)
        assert upgraded.events.stream_version("c-1") == 6
    with tidings.connect(url, registry=registry, **options) as again:  # nothing left to do
        assert part_versions(again)["event_sourcing"] == 2


def pg_index_exists(store: tidings.Store, bare_name: str) -> bool:
    """Whether an index of this name exists in the store's PostgreSQL schema."""
    outbox = store.database.tables["outbox"]  # type: ignore[attr-defined]
    qualified = f"{outbox.rsplit('.', 1)[0]}.{bare_name}"
    return store.database.query("SELECT to_regclass(%s)", (qualified,))[0][0] is not None  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_a_version_1_outbox_gets_the_full_backlog_index_and_its_rows_still_flow(
    pg_url: str,
) -> None:
    """Opening a PostgreSQL database of outbox version 1 (only a partial index of
    unpublished rows, the lanes in relay_lanes) adds the (published, position) index beside
    it, moves the lanes to the leases part, records the current version, and an event
    written before the upgrade is relayed after it."""
    from tidings.testing import RecordingTransport

    schema = f"t_{uuid.uuid4().hex[:12]}"
    registry = tidings.EventRegistry([Counted])
    try:
        with tidings.connect(pg_url, registry=registry, schema=schema, outbox=True) as old:
            outbox = old.database.tables["outbox"]  # type: ignore[attr-defined]
            versions = old.database.tables["schema_version"]  # type: ignore[attr-defined]
            prefix = outbox.rsplit(".", 1)[-1].removesuffix("outbox")
            make_outbox_version_2(old, {}, "", 0.0)
            with old.database.transaction() as tx:
                tx.execute(f"DROP INDEX {schema}.{prefix}outbox_backlog")
                tx.execute(f"UPDATE {versions} SET version = 1 WHERE component = 'outbox'")
            counter = Counter("c-1")
            counter.increment(1)
            with old.unit_of_work() as uow:
                uow.track(counter)
        with tidings.connect(pg_url, registry=registry, schema=schema, outbox=True) as new:
            assert pg_index_exists(new, f"{prefix}outbox_unpublished")
            assert pg_index_exists(new, f"{prefix}outbox_backlog")
            assert part_versions(new)["outbox"] == 3
            transport = RecordingTransport()
            relay = new.relay(transport)
            assert relay.run_once() == 1
            relay.release()
            assert len(transport.ids()) == 1
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_version_1_inbox_gets_the_in_flight_record_and_its_consumer_runs(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """Opening a database of inbox version 1 (no in-flight table) creates the in-flight
    record (version 2's table, then version 3's), records version 3, keeps the processed
    rows, and a consumer runs on it."""
    from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
    from tidings.application.handling import Handlers
    from tidings.serialization.cloudevents import to_message

    url, options = url_and_options
    registry = tidings.EventRegistry([Counted])
    with tidings.connect(url, registry=registry, **options) as old:
        database = old.database
        in_flight = database.tables["inbox_fetched"]  # type: ignore[attr-defined]
        versions = database.tables["schema_version"]  # type: ignore[attr-defined]
        with database.transaction() as tx:
            tx.execute(f"DROP TABLE {in_flight}")
            tx.execute(f"UPDATE {versions} SET version = 1 WHERE component = 'inbox'")
    seen: list[int] = []
    handlers = Handlers()
    handlers.add(Counted, "counting", lambda event, uow: seen.append(event.aggregate_version))
    with tidings.connect(url, registry=registry, **options) as upgraded:
        assert part_versions(upgraded)["inbox"] == 3
        counter = Counter("c-1")
        counter.increment(1)
        with upgraded.unit_of_work() as uow:
            uow.track(counter)
        queue = MemoryQueue()
        records = list(upgraded.events.read_stream("c-1"))
        MemoryPublisher(queue).publish([to_message(r, "test") for r in records])
        consumer = upgraded.consumer(MemorySubscription(queue), handlers, fetch_timeout=0.05)
        assert consumer.run_once() == 1
        assert seen == [1]


V2_IN_FLIGHT = (
    "CREATE TABLE {t} (consumer TEXT NOT NULL, event_id TEXT NOT NULL, aggregate_id TEXT "
    "NOT NULL, aggregate_version INTEGER NOT NULL, seen_at DOUBLE PRECISION NOT NULL, "
    "PRIMARY KEY (consumer, event_id))"
)


def test_a_version_2_in_flight_record_moves_to_one_row_per_batch(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """Messages in flight in a database of inbox version 2 (a row per message) are in
    flight after the upgrade to version 3 (a row per batch): still holding their
    aggregates back, each batch's messages together, and the old table is gone."""
    from tidings.ports import InFlightMessage

    url, options = url_and_options
    with tidings.connect(url, **options) as old:
        database = old.database
        tables = database.tables  # type: ignore[attr-defined]
        prefix = tables["inbox_fetched"].removesuffix("inbox_fetched")
        in_flight_v2 = f"{prefix}inbox_in_flight"
        with database.transaction() as tx:
            tx.execute(f"DROP TABLE {tables['inbox_fetched']}")
            tx.execute(V2_IN_FLIGHT.format(t=in_flight_v2))
            for consumer, event_id, aggregate, version, seen in (
                ("c", "a1", "a", 1, 100.0),
                ("c", "b1", "b", 1, 100.0),
                ("c", "a2", "a", 2, 200.0),
                ("other", "x1", "a", 1, 100.0),
            ):
                tx.execute(
                    f"INSERT INTO {in_flight_v2} VALUES ({', '.join([old_mark(url)] * 5)})",
                    (consumer, event_id, aggregate, version, seen),
                )
            tx.execute(
                f"UPDATE {tables['schema_version']} SET version = 2 WHERE component = 'inbox'"
            )
    with tidings.connect(url, **options) as upgraded:
        assert part_versions(upgraded)["inbox"] == 3
        in_flight = upgraded.in_flight
        assert in_flight is not None
        found = in_flight.note("c", [InFlightMessage("a3", "a", 3)], 250.0, 1_000.0)
        assert {(m.event_id, m.version) for m in found} - {("a3", 3)} == {("a1", 1), ("a2", 2)}
        rows = upgraded.database.query(  # type: ignore[attr-defined]
            f"SELECT consumer, seen_at FROM {tables['inbox_fetched']} ORDER BY consumer, seen_at"
        )
        assert [(c, float(s)) for c, s in rows] == [
            ("c", 100.0),
            ("c", 200.0),
            ("c", 250.0),
            ("other", 100.0),
        ]
        with pytest.raises(Exception, match="inbox_in_flight"):
            upgraded.database.query(f"SELECT 1 FROM {in_flight_v2}")  # type: ignore[attr-defined]


def old_mark(url: str) -> str:
    return "?" if url.startswith("sqlite") else "%s"


V2_LANES = (
    "CREATE TABLE {relay_lanes} (lane INTEGER PRIMARY KEY, owner TEXT, "
    "token BIGINT NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION NOT NULL DEFAULT 0)",
    "CREATE TABLE {relay_nodes} (relay_id TEXT PRIMARY KEY, alive_until DOUBLE PRECISION NOT NULL)",
)


def make_outbox_version_2(
    store: tidings.Store, lanes: dict[int, int], owner: str, until: float
) -> None:
    """Turn a new store's tables into what tidings made at outbox version 2, before the
    leases part: relay_lanes and relay_nodes, with ``owner`` holding ``lanes`` (lane ->
    token) until ``until``, and no leases tables."""
    database = store.database
    tables = database.tables  # type: ignore[attr-defined]
    named = {t: tables["outbox"].removesuffix("outbox") + t for t in ("relay_lanes", "relay_nodes")}
    mark = "?" if database.dialect == "sqlite" else "%s"
    with database.transaction() as tx:
        for statement in V2_LANES:
            tx.execute(statement.format(**named))
        for lane, token in lanes.items():
            tx.execute(
                f"INSERT INTO {named['relay_lanes']} (lane, owner, token, lease_until) "
                f"VALUES ({mark}, {mark}, {mark}, {mark})",
                (lane, owner, token, until),
            )
        if lanes:
            tx.execute(
                f"INSERT INTO {named['relay_nodes']} (relay_id, alive_until) "
                f"VALUES ({mark}, {mark})",
                (owner, until),
            )
        tx.execute(f"DROP TABLE {tables['leases']}")
        tx.execute(f"DROP TABLE {tables['lease_owners']}")
        versions = tables["schema_version"]
        tx.execute(f"DELETE FROM {versions} WHERE component = 'leases'")
        tx.execute(f"UPDATE {versions} SET version = 2 WHERE component = 'outbox'")


def table_exists(store: tidings.Store, table: str) -> bool:
    """Whether ``table`` (qualified as the store names its tables) exists."""
    if store.database.dialect == "sqlite":
        rows = store.database.query(  # type: ignore[attr-defined]
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
        return bool(rows)
    return store.database.query("SELECT to_regclass(%s)", (table,))[0][0] is not None  # type: ignore[attr-defined]


def test_a_version_2_outbox_hands_its_held_lanes_to_the_leases_and_its_rows_still_flow(
    url_and_options: tuple[str, dict[str, str]],
) -> None:
    """Opening a database of outbox version 2 while a relay holds its lanes creates the
    leases part, moves the lanes there (the set 'outbox') with their owner, tokens and
    lease time, drops relay_lanes and relay_nodes and records outbox version 3. The old
    relay's tokens still fence right after the upgrade. A relay of version 2 holds no
    liveness lock (and cannot run on the upgraded tables anyway), so a new relay takes
    every lane at once under higher tokens, fences the old ones out and publishes the
    event written before the upgrade."""
    from tidings.ports import OUTBOX_LANES
    from tidings.testing import RecordingTransport

    url, options = url_and_options
    registry = tidings.EventRegistry([Counted])
    now = time.time()
    held = {0: 3, 1: 5, 2: 4, 3: 7}
    with tidings.connect(url, registry=registry, outbox=True, **options) as old:
        lanes_table = old.database.tables["outbox"].removesuffix("outbox") + "relay_lanes"  # type: ignore[attr-defined]
        make_outbox_version_2(old, held, "relay-old", now + 60)
        counter = Counter("c-1")
        counter.increment(1)
        with old.unit_of_work() as uow:
            uow.track(counter)
    with tidings.connect(url, registry=registry, outbox=True, **options) as new:
        assert part_versions(new) == {p.name: p.version for p in SCHEMA_PARTS}
        assert part_versions(new)["outbox"] == 3
        assert not table_exists(new, lanes_table)
        assert new.leases is not None
        with new.database.transaction() as tx:
            assert new.leases.holds(tx, "relay-old", OUTBOX_LANES, held)
        transport = RecordingTransport()
        later = new.relay(transport, relay_id="relay-new", lanes=4, clock=time.time)
        assert later.run_once() == 1, "the lanes of a holder with no sign of life stay blocked"
        assert later.stats.lanes_held == 4
        taken = {lane: token + 1 for lane, token in held.items()}
        with new.database.transaction() as tx:
            assert new.leases.holds(tx, "relay-new", OUTBOX_LANES, taken)
            assert not new.leases.holds(tx, "relay-old", OUTBOX_LANES, held)
        later.release()
        assert len(transport.ids()) == 1

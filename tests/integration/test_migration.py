"""Safe event migration: a copy into a new store, through a transform, checked at the end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

import tidings
from tidings import MigrationError
from tidings.examples.shop.es_orders import ORDER_EVENTS, Order
from tidings.records import EventRecord
from tidings.testing.customer import Customer, Referred, Registered

REGISTRY_CLASSES = (*ORDER_EVENTS, Registered, Referred)
DAY = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)


def registry() -> tidings.EventRegistry:
    """Orders and customers; ItemAdded at version 2, with no upcaster (the migration's job)."""
    return tidings.EventRegistry(REGISTRY_CLASSES)


def fill(store: tidings.Store) -> None:
    """Three orders (one with an event stored at v1) and a customer with personal data."""
    for n in range(3):
        order = Order.create(f"o-{n}", f"c-{n}", shipping_address=f"{n} Main St", clock=lambda: DAY)
        order.add_item("BOOK", n + 1, 1_000)
        order.add_item("PEN", 1, 150)
        with store.unit_of_work() as uow:
            uow.track(order)
    old = EventRecord(
        event_id=tidings.uuid7(),
        stream_id="o-0",
        version=4,
        event_type="orders.item_added",
        schema_version=1,
        occurred_at=DAY,
        data=json.dumps({"sku": "LAMP", "quantity": 1, "price": "49.50"}).encode(),
    )
    with store.database.transaction() as tx:
        store.events.append(tx, [old], 3)
    customer = Customer("c-ada")
    customer.register("ada@example.com", "Ada")
    with store.unit_of_work() as uow:
        uow.track(customer)


def price_in_cents(record: EventRecord) -> EventRecord:
    """The batch conversion: ItemAdded v1 (a euro string) becomes v2 (whole cents)."""
    if record.event_type != "orders.item_added" or record.schema_version != 1:
        return record
    payload = json.loads(record.data)
    euros, _, cents = payload.pop("price").partition(".")
    payload["unit_price_cents"] = int(euros) * 100 + int(cents.ljust(2, "0"))
    return dataclasses.replace(record, schema_version=2, data=json.dumps(payload).encode())


def without_pens(record: EventRecord) -> EventRecord | None:
    """Drops every ItemAdded of a PEN (after converting v1 prices)."""
    record = price_in_cents(record)
    if record.event_type == "orders.item_added" and b"PEN" in record.data:
        return None
    return record


def identity(store: tidings.Store) -> list[tuple[str, str, int, datetime]]:
    """Event id, stream, version and time of every event in the log, in order."""
    return [
        (r.event_id, r.stream_id, r.version, r.occurred_at)
        for r in tidings.application.event_log.iter_log(store.events)
    ]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tidings.Store]:
    """A filled SQLite store."""
    with tidings.connect(f"sqlite:///{tmp_path / 'old.db'}", registry=registry()) as store:
        fill(store)
        yield store


def test_a_copy_keeps_ids_streams_versions_times_and_personal_data(
    source: tidings.Store, tmp_path: Path
) -> None:
    """SQLite to SQLite with a transform: the v1 event is v2 in the target, readable
    without an upcaster; the keys came along, so sealed fields read in clear."""
    with tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target:
        seen: list[tuple[int, int]] = []
        report = tidings.migrate(
            source, target, price_in_cents, batch=4, progress=lambda r, w: seen.append((r, w))
        )
        assert (report.read, report.written, report.dropped, report.keys) == (11, 11, 0, 4)
        assert seen == [(4, 4), (8, 8), (11, 11)]
        assert identity(target) == identity(source)
        (record,) = [r for r in target.events.read_stream("o-0") if r.version == 4]
        assert record.schema_version == 2
        order = target.repository(Order).get("o-0")
        assert order.lines["LAMP"].unit_price_cents == 4_950
        assert order.shipping_address == "0 Main St"
        assert target.repository(Customer).get("c-ada").email == "ada@example.com"
    assert source.events.count() == 11  # the source is only read


def test_a_subject_forgotten_in_the_source_stays_forgotten_in_the_copy(
    source: tidings.Store, tmp_path: Path
) -> None:
    """No key, no copy of it: the target reads the marker too."""
    source.forget("c-ada")
    with tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target:
        assert tidings.migrate(source, target, price_in_cents).keys == 3
        assert target.repository(Customer).get("c-ada").email == tidings.REDACTED


def test_dropped_events_close_up_their_stream_so_versions_stay_contiguous(
    source: tidings.Store, tmp_path: Path
) -> None:
    """Each order loses its PEN line (version 3): version 4 becomes 3, and loads."""
    with tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target:
        report = tidings.migrate(source, target, without_pens)
        assert (report.written, report.dropped, report.renumbered_streams) == (8, 3, 3)
        versions = [r.version for r in target.events.read_stream("o-0")]
        assert versions == [1, 2, 3]
        assert sorted(target.repository(Order).get("o-0").lines) == ["BOOK", "LAMP"]


def test_a_target_that_holds_events_is_refused(source: tidings.Store, tmp_path: Path) -> None:
    """Never into a store in use, and never in place."""
    with pytest.raises(MigrationError, match="same store"):
        tidings.migrate(source, source)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with (
        tidings.connect(url, registry=registry()) as same_file,
        pytest.raises(MigrationError, match="same store"),
    ):
        tidings.migrate(source, same_file)
    with tidings.connect(f"sqlite:///{tmp_path / 'used.db'}", registry=registry()) as used:
        fill(used)
        with pytest.raises(MigrationError, match="already holds events"):
            tidings.migrate(source, used)


@pytest.mark.parametrize(
    ("transform", "says"),
    [
        (lambda r: dataclasses.replace(r, event_id="x"), "changed the event id, stream or time"),
        (lambda r: dataclasses.replace(r, stream_id="x"), "changed the event id, stream or time"),
        (lambda r: r.data, "returned bytes"),
        (lambda r: 1 / 0, "the transform failed on event .* ZeroDivisionError"),
    ],
)
def test_a_transform_that_breaks_the_rules_stops_the_copy_with_the_record(
    source: tidings.Store, tmp_path: Path, transform: object, says: str
) -> None:
    """The error names what is wrong and the record it happened on."""
    with (
        tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target,
        pytest.raises(MigrationError, match=says),
    ):
        tidings.migrate(source, target, transform)  # type: ignore[arg-type]


def test_a_batch_below_one_is_refused(source: tidings.Store) -> None:
    """batch=0 could never make progress."""
    with pytest.raises(MigrationError, match="batch must be at least 1"):
        tidings.migrate(source, source, batch=0)


def test_a_target_that_changed_during_the_copy_fails_the_final_check(
    source: tidings.Store, tmp_path: Path
) -> None:
    """Another writer in the target is caught by the read-back, not switched over to."""
    with tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target:

        def meddle(read: int, written: int) -> None:
            if read == 11:
                customer = Customer("c-intruder")
                customer.register("x@example.com")
                with target.unit_of_work() as uow:
                    uow.track(customer)

        with pytest.raises(MigrationError, match="holds 12 events, but 11 were written"):
            tidings.migrate(source, target, price_in_cents, progress=meddle)


def test_a_source_written_to_during_the_copy_fails_the_final_check(
    source: tidings.Store, tmp_path: Path
) -> None:
    """An event appended to the source after its log was read is not in the copy: the
    count check says so instead of reporting a complete copy."""
    with tidings.connect(f"sqlite:///{tmp_path / 'new.db'}", registry=registry()) as target:

        def late_writer(read: int, written: int) -> None:
            if read == 11:
                customer = Customer("c-late")
                customer.register("late@example.com")
                with source.unit_of_work() as uow:
                    uow.track(customer)

        with pytest.raises(MigrationError, match="holds 12 events, but 11 were read"):
            tidings.migrate(source, target, price_in_cents, progress=late_writer)


@pytest.mark.postgres
def test_a_sqlite_store_is_copied_into_postgresql(source: tidings.Store, pg_url: str) -> None:
    """Across backends: the same identities, readable events and personal data."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with tidings.connect(pg_url, registry=registry(), schema=schema) as target:
            report = tidings.migrate(source, target, price_in_cents, batch=5)
            assert report.written == 11
            assert identity(target) == identity(source)
            assert target.repository(Order).get("o-0").lines["LAMP"].unit_price_cents == 4_950
            assert target.repository(Customer).get("c-ada").email == "ada@example.com"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


TRANSFORM_MODULE = """
import dataclasses, json

def cents(record):
    if record.event_type != "orders.item_added" or record.schema_version != 1:
        return record
    payload = json.loads(record.data)
    payload["unit_price_cents"] = int(float(payload.pop("price")) * 100)
    return dataclasses.replace(record, schema_version=2, data=json.dumps(payload).encode())
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m tidings ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_the_cli_copies_with_a_transform_from_the_current_folder(
    source: tidings.Store, tmp_path: Path
) -> None:
    """``tidings events migrate --from --to --transform module:function`` reports the copy."""
    (tmp_path / "my_migration.py").write_text(TRANSFORM_MODULE)
    old, new = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    args = ("events", "migrate", "--from", old, "--to", new)
    result = run_cli(*args, "--transform", "my_migration:cents", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "copied 11 of 11 events (0 dropped, 0 streams renumbered) and 4 subject keys" in (
        result.stdout
    )
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds events" in again.stderr
    bad = run_cli(*args, "--transform", "my_migration", cwd=tmp_path)
    assert bad.returncode == 2
    assert "is not module:function" in bad.stderr
    missing = run_cli(*args, "--transform", "nowhere:cents", cwd=tmp_path)
    assert "cannot import 'nowhere'" in missing.stderr
    no_function = run_cli(*args, "--transform", "my_migration:dollars", cwd=tmp_path)
    assert "has no function 'dollars'" in no_function.stderr
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    no_source = run_cli("events", "migrate", "--from", empty, "--to", new, cwd=tmp_path)
    assert no_source.returncode == 2
    assert "no such table: tidings_events" in no_source.stderr  # never created in the source

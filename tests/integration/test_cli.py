"""The ``tidings`` command: the demo tells its story; ``schema`` prints DDL that works."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

import tidings
from tidings.testing.contract import Counted, Counter

from .cli import run_cli


def test_the_demo_tells_the_recording_and_publishing_story_in_order(tmp_path: Path) -> None:
    """Commit before delivery, nothing on a failed save, the rules, a refused stale writer."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        str(db),
        "delivered so far: 0",
        "COMMIT succeeded. Only now",
        "→ notification: emails alice@example.com",
        "UNIQUE constraint failed: shop_orders.order_id",
        "handlers called 0 times",
        "still pending on Bob's order (1 event)",
        "EmptyOrderError",
        "OrderAlreadyPlacedError",
        "The second gets ConcurrencyError: stream at version 2, expected 1",
        "#2 OrderCancelled o-1001 v2",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM tidings_events WHERE stream_id = 'o-1001'"
        assert conn.execute(query).fetchone() == (2,)


def test_the_demo_tells_the_event_sourcing_story_in_order(tmp_path: Path) -> None:
    """Rebuilt from events, a temporal query, snapshots (periodic, temporal, on demand) and
    an upcast v1 event, in that order; the file holds the events and snapshots told of."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        "2. Event sourcing (spec 6.3)",
        "o-2001 has no row anywhere",
        "v1 OrderCreated 09:00; v2 ItemAdded 09:05",
        "v5 OrderPlaced 09:30",
        "replaying 5 events gives PLACED, 2 x BOOK-42, total €39.00",
        '"what was o-2001 at 09:22?": DRAFT, 2 x BOOK-42, 1 x LAMP-3, total €88.00 (version 3',
        "snapshot at version 10 + 3 events instead of all 13; 12 lines",
        "Loading version 7: snapshot at version 5 + 2 events",
        "now version 13 + 0 events",
        'orders.item_added v1 {"sku": "PEN-1", "quantity": 3, "price": "2.40"}',
        "ItemAdded v2 with unit_price_cents=240; the order loads as DRAFT, 3 x PEN-1, total €7.20",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert out.find("1. Recording and publishing") < positions[0]
    with sqlite3.connect(db) as conn:
        snapshots = conn.execute(
            "SELECT stream_id, version FROM tidings_snapshots WHERE stream_id = 'o-2002' "
            "ORDER BY version"
        ).fetchall()
        old_event = conn.execute(
            "SELECT schema_version, data FROM tidings_events WHERE stream_id = 'o-1999' "
            "AND version = 2"
        ).fetchone()
    assert snapshots == [("o-2002", 5), ("o-2002", 10), ("o-2002", 13)]
    assert old_event[0] == 1  # upcast on read, never rewritten in place
    assert '"price": "2.40"' in old_event[1]


def test_the_demo_forgets_a_customer_whose_address_then_reads_as_redacted(
    tmp_path: Path,
) -> None:
    """The address is sealed, readable, then forgotten: the order still loads, the files
    hold the address nowhere, and the key table has no key of Grace's."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        "Grace (customer c-grace) orders o-2003 to 12 Rose Lane, Leeds",
        "Stored: shipping_address tidings:pd1:",
        "read back: 12 Rose Lane, Leeds.",
        "store.forget('c-grace')",
        "PLACED, 1 x SCARF-2, total €25.00, shipping to [REDACTED]",
        "hold '12 Rose Lane, Leeds' 0 times; Grace's key: none.",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    with sqlite3.connect(db) as conn:
        keys = conn.execute("SELECT subject FROM tidings_subject_keys").fetchall()
    assert keys == []
    assert b"Rose Lane" not in db.read_bytes()


def test_the_demo_tells_the_saga_story_in_order(tmp_path: Path) -> None:
    """Section 5: the order PENDING while its saga waits, then CONFIRMED; out of stock
    refunds and cancels, last first; the hotel booking's timeline and its 5.00 of card
    fees; the file holds the three sagas in the states told of."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        "5. Sagas: compensation and eventual consistency (spec 6.2)",
        "the saga waits on a durable timer: RUNNING, retry at 18:00:01.",
        "anyone reading o-5001 sees it PENDING",
        "run_once() drives it on: COMPLETED; o-5001 is CONFIRMED, 1 x LAMP-3 left.",
        "StepRefusedError: out of stock: 3 x LAMP-3 asked.",
        "ChargePayment then CreateOrder -> COMPENSATED; o-5002 is CANCELLED, €147.00 refunded",
        "Kim's booking ends COMPENSATED; the room is CANCELLED.",
        "18:01:01  action_failed SendConfirmation: ConnectionError",
        "18:06:01  discrepancy ChargeCard (€5.00): card fees: charged 103.00, refunded 98.00",
        "18:06:01  saga_compensated",
        "sagas.discrepancy_total('hotel-booking'): €5.00 (create-order: €0.00).",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert out.find("4. The inbox and the decision matrix") < positions[0]
    with sqlite3.connect(db) as conn:
        sagas = conn.execute("SELECT saga_id, state FROM tidings_sagas ORDER BY saga_id").fetchall()
        orders = conn.execute("SELECT order_id, status FROM saga_orders ORDER BY 1").fetchall()
    assert sagas == [
        ("create-order-o-5001", "COMPLETED"),
        ("create-order-o-5002", "COMPENSATED"),
        ("hotel-booking-b-5003", "COMPENSATED"),
    ]
    assert orders == [("o-5001", "CONFIRMED"), ("o-5002", "CANCELLED")]


def seal_for(url: str, subject: str) -> None:
    """Save a customer with personal data in the store at ``url``."""
    from tidings.testing.customer import Customer, Referred, Registered

    registry = tidings.EventRegistry([Registered, Referred])
    with tidings.connect(url, registry=registry) as store:
        customer = Customer(subject)
        customer.register("ada@example.com")
        with store.unit_of_work() as uow:
            uow.track(customer)


def test_forget_asks_first_and_then_deletes_the_subjects_key(tmp_path: Path) -> None:
    """Declining the question keeps the key; --yes deletes it; a second time says so."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    seal_for(url, "c-ada")
    declined = run_cli("forget", "c-ada", "--db", url, stdin="n\n")
    assert declined.returncode == 1
    assert "Forget 'c-ada' for good?" in declined.stdout
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        assert conn.execute("SELECT count(*) FROM tidings_subject_keys").fetchone() == (1,)
    done = run_cli("forget", "c-ada", "--db", url, "--yes")
    assert done.returncode == 0, done.stderr
    assert "forgot 'c-ada'" in done.stdout
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        assert conn.execute("SELECT count(*) FROM tidings_subject_keys").fetchone() == (0,)
    again = run_cli("forget", "c-ada", "--db", url, "--yes")
    assert "'c-ada' has no key here" in again.stdout


def test_the_demo_refuses_to_touch_an_existing_file(tmp_path: Path) -> None:
    """An existing --db path is left alone: exit code 2 and a message."""
    db = tmp_path / "precious.db"
    db.write_bytes(b"keep me")
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert db.read_bytes() == b"keep me"


def test_a_bad_prefix_is_refused_with_the_rule(tmp_path: Path) -> None:
    """``schema --prefix`` with a quote in it: exit code 2 and the identifier rule."""
    result = run_cli("schema", "--dialect", "sqlite", "--prefix", "x'; DROP TABLE y; --")
    assert result.returncode == 2
    assert "not a safe SQL identifier" in result.stderr
    assert "CREATE" not in result.stdout


def test_printed_sqlite_ddl_is_what_a_store_without_auto_create_needs(tmp_path: Path) -> None:
    """Apply ``tidings schema --dialect sqlite`` by hand, then connect with create_schema=False."""
    result = run_cli("schema", "--dialect", "sqlite", "--prefix", "shop_")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "migrated.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(result.stdout)
    roundtrip(f"sqlite:///{db}", prefix="shop_")


@pytest.mark.postgres
def test_printed_postgres_ddl_is_what_a_store_without_auto_create_needs(pg_url: str) -> None:
    """Apply ``tidings schema --dialect postgresql`` by hand, then connect without creating."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    result = run_cli("schema", "--dialect", "postgresql", "--schema", schema, "--prefix", "x_")
    assert result.returncode == 0, result.stderr
    assert f"CREATE TABLE IF NOT EXISTS {schema}.x_events" in result.stdout
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(result.stdout)
        roundtrip(pg_url, prefix="x_", schema=schema)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def roundtrip(url: str, **options: str) -> None:
    """Write and read one event through a store that must not create tables itself."""
    store = tidings.connect(
        url, registry=tidings.EventRegistry([Counted]), create_schema=False, **options
    )
    counter = Counter("c-1")
    counter.increment(3)
    with store.unit_of_work() as uow:
        uow.track(counter)
    assert [e.step for e in store.read_stream("c-1")] == [3]  # type: ignore[attr-defined]
    store.close()


def test_the_demo_tells_the_outbox_and_inbox_story_in_order(tmp_path: Path) -> None:
    """The outbox keeps the event through a broker outage and publishes no phantom; the
    duplicate example drops the stock three times without an inbox and once with it, at
    levels 3 and 5; bad input becomes dead letters with their reasons."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        "3. The outbox and its relay (spec 6.1.2)",
        "order, event and outbox row in one transaction (backlog 1)",
        "The broker is down; the relay's pass fails",
        "Backlog 1: the event waits in the outbox",
        "published 1 with its confirmation, backlog 0",
        "backlog 0, published still 1: no phantom event",
        "4. The inbox and the decision matrix",
        "level 1, in-memory bus, no inbox:        BOOK-42 100 -> 94",
        "level 3, inbox behind the bus:           BOOK-42 100 -> 98",
        "level 5, outbox -> broker -> inbox:       BOOK-42 100 -> 98",
        "- not valid JSON",
        "- no event class is registered for type 'OrderTeleported'",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "message buried" not in result.stdout + result.stderr  # no log noise in the story
    with sqlite3.connect(tmp_path / "inventory.db") as conn:
        assert conn.execute("SELECT on_hand FROM shop_stock").fetchall() == [(98,)]
        assert conn.execute("SELECT count(*) FROM tidings_inbox_dead_letters").fetchone() == (2,)


def test_the_demo_tells_the_read_model_story_in_order(tmp_path: Path) -> None:
    """Section 6: four read models built from the demo's events, the lag line while Hana's
    order is not in yet, the spec's three answers, then the token waited on; the file
    holds the read models and their checkpoints at the head."""
    db = tmp_path / "shop.db"
    result = run_cli("demo", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    story = [
        "6. CQRS: read models and read-your-writes (spec 6.4)",
        "Caught up: each has read the 34 events of the global log",
        "OrderSummary (customers): o-2001 PLACED, 2 items, €39.00.",
        "CustomerOrders (a customer's list): erin@example.com has o-2002 DRAFT.",
        "SalesAnalytics (BI): BOOK-42 €39.00, SCARF-2 €25.00; top customers",
        "ShippingQueue (warehouse): o-2001 2 x BOOK-42; o-2003 1 x SCARF-2.",
        "shop.order-summary v1  running  position 34 of 37  lag 3 events",
        "1. The command's result: {'order_id': 'o-6001', 'status': 'PLACED'}.",
        "which has no o-6001 yet: PROCESSING, and the UI polls.",
        "3. A command-side query, orders.get('o-6001'): PLACED.",
        "4. The token: uow.position is 37;",
        "and the page reads PLACED, €27.00.",
        "position 37 of 37  lag 0 events",
    ]
    positions = [out.find(line) for line in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert out.find("5. Sagas") < positions[0]
    with sqlite3.connect(db) as conn:
        checkpoints = conn.execute(
            "SELECT name, position FROM tidings_projections ORDER BY name"
        ).fetchall()
        summary = conn.execute(
            "SELECT status, total_cents FROM shop_order_summary WHERE order_id = 'o-6001'"
        ).fetchone()
    assert checkpoints == [
        ("shop.customer-orders", 37),
        ("shop.order-summary", 37),
        ("shop.sales-analytics", 37),
        ("shop.shipping-queue", 37),
    ]
    assert summary == ("PLACED", 2_700)

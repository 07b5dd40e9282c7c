"""Metrics registered in a process: the counters are the workers' own, the database's
gauges are read at scrape time, and they agree with what the tables say."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.backoff import Backoff
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.examples.shop.inventory import handlers
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.observability.metrics import register

from ..conftest import MakeStore


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of the registry's text exposition, parsed by prometheus-client's own
    parser: name{labels} -> value."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def place_orders(store: tidings.Store, count: int) -> None:
    for _ in range(count):
        order = Order(f"o-{uuid.uuid4().hex[:8]}", "c@example.com")
        order.add_line("BOOK-42", 1, 1_000)
        order.place()
        with store.unit_of_work() as uow:
            uow.track(order)


def test_counters_equal_the_tables_and_the_backlog_falls_to_zero(
    make_sql_store: MakeStore,
) -> None:
    """Twelve orders relayed and consumed in one process: the relay's published counter
    and commit-to-ack count, the consumer's received and per-handler counts match the
    outbox and inbox rows; the backlog gauge reads 12 before the relay and 0 after."""
    orders = make_sql_store(tidings.EventRegistry(SHOP_EVENTS), outbox=True)
    inventory = make_sql_store(tidings.EventRegistry(SHOP_EVENTS))
    queue = MemoryQueue()
    relay = orders.relay(MemoryPublisher(queue))
    consumer = inventory.consumer(MemorySubscription(queue), handlers(), name="inventory")
    registry = CollectorRegistry()
    register(registry, store=orders, relay=relay, consumer=consumer)
    place_orders(orders, 12)

    before = scrape(registry)
    relay.drain()
    relay.release()
    while consumer.run_once():
        pass
    after = scrape(registry)

    published = orders.database.query(
        f"SELECT count(*) FROM {orders.database.tables['outbox']} WHERE published = TRUE"
    )[0][0]
    processed = inventory.database.query(
        f"SELECT count(*) FROM {inventory.database.tables['inbox']} WHERE status = 'processed'"
    )[0][0]
    assert (before["tidings_outbox_backlog"], after["tidings_outbox_backlog"]) == (12, 0)
    assert after["tidings_relay_published_total"] == published == 12
    assert after["tidings_relay_commit_to_ack_seconds_count"] == published
    assert after["tidings_consumer_received_total"] == 12
    assert after["tidings_consumer_applied_total"] == processed == 12
    handler = "handler=inventory.decrease-stock"
    assert after[f"tidings_handler_seconds_count{{{handler}}}"] == processed
    assert after["tidings_inbox_duplicates_total"] == 0
    assert after["tidings_database_up"] == 1


def test_dead_letters_and_refusals_show_in_counters_and_gauges(
    make_sql_store: MakeStore,
) -> None:
    """A broker that refuses every message, one attempt allowed: each refusal is a publish
    failure and each event a dead letter, counted the same by the relay and the table."""
    orders = make_sql_store(tidings.EventRegistry(SHOP_EVENTS), outbox=True)
    relay = orders.relay(MemoryPublisher(MemoryQueue(), max_message_bytes=1), max_attempts=1)
    registry = CollectorRegistry()
    register(registry, store=orders, relay=relay)
    place_orders(orders, 3)
    relay.drain()
    relay.release()
    found = scrape(registry)
    assert found["tidings_relay_publish_failures_total"] == 3
    assert found["tidings_outbox_dead_letters"] == 3
    assert found["tidings_relay_published_total"] == 0


def test_a_failed_handler_is_counted_and_every_run_of_the_others_is_timed(
    make_sql_store: MakeStore,
) -> None:
    """A handler that fails its first attempt: one failure counted under its name; the
    handler beside it ran twice (in the batch that was undone, then alone) and both runs
    are timed; the redelivery finds it a duplicate."""
    orders = make_sql_store(tidings.EventRegistry(SHOP_EVENTS), outbox=True)
    inventory = make_sql_store(tidings.EventRegistry(SHOP_EVENTS))
    queue = MemoryQueue()
    relay = orders.relay(MemoryPublisher(queue))
    failed: list[str] = []

    def flaky(event: OrderPlaced, uow: UnitOfWork) -> None:
        if not failed:
            failed.append(event.aggregate_id)
            raise RuntimeError("the first attempt fails")

    chosen = Handlers()
    chosen.add(OrderPlaced, "steady", lambda event, uow: None)
    chosen.add(OrderPlaced, "flaky", flaky)
    consumer = inventory.consumer(
        MemorySubscription(queue), chosen, name="inventory", backoff=Backoff(base=0.0)
    )
    registry = CollectorRegistry()
    register(registry, consumer=consumer)
    place_orders(orders, 1)
    relay.drain()
    relay.release()
    while consumer.run_once():
        pass
    found = scrape(registry)
    assert found["tidings_handler_failures_total{handler=flaky}"] == 1
    assert found["tidings_handler_seconds_count{handler=steady}"] == 2
    assert found["tidings_handler_seconds_count{handler=flaky}"] == 1
    assert found["tidings_inbox_duplicates_total"] == 1

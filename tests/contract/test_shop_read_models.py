"""The spec's four read models from the same Order events, on every backend: what each
reader's query returns after a day of orders (placed, changed, shipped, cancelled)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.examples.shop.es_orders import ORDER_EVENTS, Order
from tidings.examples.shop.read_models import (
    CustomerOrder,
    CustomerRevenue,
    GetCustomerOrdersQuery,
    GetOrderSummaryQuery,
    GetSalesReportQuery,
    GetShippingQueueQuery,
    OrderSummary,
    ProductRevenue,
    ShopReadModels,
    read_models,
)


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry(ORDER_EVENTS))


@pytest.fixture
def models(store: tidings.Store) -> Iterator[ShopReadModels]:
    """The read models under a prefix of this test's own (PostgreSQL tests share the
    public schema); their tables are dropped afterwards."""
    made = read_models(f"shop_{uuid.uuid4().hex[:8]}_")
    yield made
    with store.unit_of_work() as uow:
        for projection in made.projections:
            for statement in projection.schema:
                if statement.startswith("CREATE TABLE IF NOT EXISTS "):
                    table = statement.split()[5]
                    uow.execute(f"DROP TABLE IF EXISTS {table}")


def a_day_of_orders(store: tidings.Store) -> int:
    """Alice orders books and a mug (shipped), then a lamp (placed, waiting); Bob orders
    a mug and cancels it; Carol leaves a draft. Returns the last token."""
    orders = store.repository(Order)
    stories: list[tuple[str, str, Callable[[Order], None]]] = [
        (
            "o-1",
            "alice",
            lambda o: (
                o.add_item("BOOK-42", 2, 1_950),
                o.add_item("MUG-7", 1, 1_350),
                o.add_item("PEN-1", 1, 200),
                o.remove_item("PEN-1"),
                o.place(),
                o.ship("DHL"),
            ),
        ),
        (
            "o-2",
            "bob",
            lambda o: (o.add_item("MUG-7", 2, 1_350), o.place(), o.cancel("changed mind")),
        ),
        (
            "o-3",
            "alice",
            lambda o: (o.add_item("LAMP-3", 1, 4_900), o.add_item("LAMP-3", 1, 4_900), o.place()),
        ),
        ("o-4", "carol", lambda o: o.add_item("BOOK-42", 1, 1_950)),
    ]
    token = 0
    for order_id, customer, story in stories:
        order = Order.create(order_id, customer)
        story(order)
        with store.unit_of_work() as uow:
            orders.save(uow, order)
        assert uow.position is not None
        token = uow.position
    return token


def test_four_read_models_answer_their_readers_from_the_same_events(
    store: tidings.Store, models: ShopReadModels
) -> None:
    """Customers, BI and the warehouse each get the shape they read, with DTOs."""
    token = a_day_of_orders(store)
    runner = store.projections(models.projections)
    while runner.run_once():
        pass
    for projection in models.projections:
        assert runner.wait_for(token, projection.name, 1.0) == token

    summary = GetOrderSummaryQuery(store, models)
    assert summary.execute("o-1") == OrderSummary("o-1", "alice", "SHIPPED", 3, 5_250, "DHL")
    assert summary.execute("o-2") == OrderSummary("o-2", "bob", "CANCELLED", 2, 2_700, "")
    assert summary.execute("o-4") == OrderSummary("o-4", "carol", "DRAFT", 1, 1_950, "")
    assert summary.execute("o-9") is None

    listing = GetCustomerOrdersQuery(store, models).execute("alice")
    assert [(o.order_id, o.status, o.total_cents) for o in listing] == [
        ("o-3", "PLACED", 9_800),
        ("o-1", "SHIPPED", 5_250),
    ]
    assert all(isinstance(o, CustomerOrder) for o in listing)

    report = GetSalesReportQuery(store, models).execute(top=2)
    assert report.by_product == [  # Bob's cancelled mugs are taken back; drafts never count
        ProductRevenue("LAMP-3", 2, 9_800),
        ProductRevenue("BOOK-42", 2, 3_900),
        ProductRevenue("MUG-7", 1, 1_350),
    ]
    assert report.top_customers == [CustomerRevenue("alice", 2, 15_050)]

    queue = GetShippingQueueQuery(store, models).execute()
    assert [(q.order_id, q.customer_id, q.pick_list) for q in queue] == [
        ("o-3", "alice", "2 x LAMP-3")
    ]


def test_the_order_summary_agrees_with_the_aggregates(
    store: tidings.Store, models: ShopReadModels
) -> None:
    """For every order, the read model's status and total are the aggregate's."""
    a_day_of_orders(store)
    runner = store.projections([models.order_summary])
    while runner.run_once():
        pass
    orders, summary = store.repository(Order), GetOrderSummaryQuery(store, models)
    for order_id in ("o-1", "o-2", "o-3", "o-4"):
        order, row = orders.get(order_id), summary.execute(order_id)
        assert row is not None
        assert (row.status, row.total_cents) == (str(order.status), order.total_cents)


def test_a_bad_table_prefix_is_refused() -> None:
    """The prefix goes into SQL: only lower-case letters, digits and '_'."""
    with pytest.raises(ValueError, match="table prefix"):
        read_models("shop; DROP TABLE x")

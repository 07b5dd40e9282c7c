"""``tidings demo``, section 6: CQRS read models and read-your-writes (spec 6.4), as a story."""

from __future__ import annotations

import threading

import tidings
from tidings.application.projections import ProjectionRunner
from tidings.cli.demo import console, euros, say
from tidings.examples.shop.es_orders import Order
from tidings.examples.shop.read_models import (
    GetCustomerOrdersQuery,
    GetOrderSummaryQuery,
    GetSalesReportQuery,
    GetShippingQueueQuery,
    ShopReadModels,
    read_models,
)


def projections(store: tidings.Store) -> None:
    """Four read models built from the events above; the lag line; a write read back
    through each of the spec's three answers and a consistency token."""
    console.rule("6. CQRS: read models and read-your-writes (spec 6.4)")
    models = read_models()
    runner = store.projections(models.projections)
    try:
        built_from_the_log(store, runner, models)
        read_your_writes(store, runner, models)
    finally:
        runner.close()


def built_from_the_log(
    store: tidings.Store, runner: ProjectionRunner, models: ShopReadModels
) -> None:
    """The four projections catch up on the events of sections 2 to 5."""
    say("Four projections turn the orders' events into four read models, each shaped for")
    say("its reader; handlers select and transform, the rules stay in Order.")
    while runner.run_once():
        pass
    head = runner.status(["shop.order-summary"])[0].head
    say(f"Caught up: each has read the {head} events of the global log, in batches.", 2)
    dave = GetOrderSummaryQuery(store, models).execute("o-2001")
    if dave is not None:
        say(
            f"OrderSummary (customers): o-2001 {dave.status}, {dave.item_count} items, "
            f"{euros(dave.total_cents)}.",
            2,
        )
    listing = GetCustomerOrdersQuery(store, models).execute("erin@example.com")
    say(
        "CustomerOrders (a customer's list): erin@example.com has "
        + ", ".join(f"{o.order_id} {o.status}" for o in listing)
        + ".",
        2,
    )
    report = GetSalesReportQuery(store, models).execute(top=2)
    say(
        "SalesAnalytics (BI): "
        + ", ".join(f"{p.sku} {euros(p.revenue_cents)}" for p in report.by_product)
        + "; top customers "
        + ", ".join(f"{c.customer_id} {euros(c.revenue_cents)}" for c in report.top_customers)
        + ".",
        2,
    )
    queue = GetShippingQueueQuery(store, models).execute()
    say(
        "ShippingQueue (warehouse): "
        + "; ".join(f"{q.order_id} {q.pick_list}" for q in queue)
        + ".",
        2,
    )


def read_your_writes(
    store: tidings.Store, runner: ProjectionRunner, models: ShopReadModels
) -> None:
    """Hana's order, read back at once: the three answers of 6.4.5 and the token."""
    say()
    say("Hana places o-6001 and at once opens her order page: the read model lags the write.")
    orders = store.repository(Order)
    order = Order.create("o-6001", "hana@example.com")
    order.add_item("MUG-7", 2, 1_350)
    order.place()
    with store.unit_of_work() as uow:
        orders.save(uow, order)
    summary = GetOrderSummaryQuery(store, models)
    [status] = runner.status(["shop.order-summary"])
    say(f"tidings projections status: {status.describe()}", 2)
    say(f"1. The command's result: {{'order_id': 'o-6001', 'status': '{order.status}'}}.", 2)
    seen = summary.execute("o-6001")
    say(
        f"2. The order page asks the read model, which has no o-6001 yet: "
        f"{seen.status if seen else 'PROCESSING'}, and the UI polls.",
        2,
    )
    say(f"3. A command-side query, orders.get('o-6001'): {orders.get('o-6001').status}.", 2)
    stop = threading.Event()
    follower = threading.Thread(target=runner.run, args=(stop,))
    follower.start()
    try:
        at = store.wait_for(uow.position, "shop.order-summary", timeout=10)
    finally:
        stop.set()
        follower.join()
    hana = summary.execute("o-6001")
    say(
        f"4. The token: uow.position is {uow.position}; store.wait_for(token, "
        f"'shop.order-summary') returns once the projection is at {at}, and the page reads "
        f"{hana.status if hana else 'nothing'}, {euros(hana.total_cents if hana else 0)}.",
        2,
    )
    [status] = runner.status(["shop.order-summary"])
    say(f"tidings projections status: {status.describe()}", 2)

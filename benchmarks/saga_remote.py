"""Remote-step sagas over NATS JetStream: throughput, duration, and what waiting costs.

    .venv/bin/python benchmarks/saga_remote.py
    .venv/bin/python benchmarks/saga_remote.py --rate 100 --seconds 10 --waiting 10000

Two services in one process, each on its own PostgreSQL schema with its outbox, relay,
inbox and consumer, and a JetStream stream each way. Order runs the saga
``create-order`` (local) -> ``charge`` (a command to Payment, awaited) -> ``confirm``
(local); Payment's handler writes the charge and replies through its outbox. Order's
consumer hands the reply to the orchestrator; an orchestrator thread drives due sagas.

1. Steady load: sagas started at ``--rate`` a second for ``--seconds`` (from four
   threads, each on its own share of the schedule); sagas/s is the
   completed count over the time from the first start to the last completion; the
   duration of each saga is its ``saga_completed`` time minus its ``saga_started`` time,
   from its history.
2. The baseline, measured in the same run at the same rate: the same round trip without
   a saga (a unit of work writes the order and sends ChargePayment; Payment replies; a
   plain handler in Order's consumer records the reply): what the messaging itself costs
   (two relays, two brokers hops, two inboxes). The saga's extra is the difference.
3. Waiting: ``--waiting`` sagas (default 10,000) whose command nobody answers (deadline
   one hour): the orchestrator process's resident memory (VmRSS) and thread count before
   and after, with the orchestrator passing over them (nothing is due).

Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import servers
from report import load, percentile, table

import tidings
from tidings.adapters.brokers import open_publisher, open_subscription
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.saga import SagaDefinition, Step, StepContext
from tidings.domain.saga_messages import SagaCommand, SagaReply

RATE_TARGET_NOTE = "no thread per saga, memory growth < 50 MB"


@dataclass(frozen=True, kw_only=True)
class ChargePayment(SagaCommand):
    """Order asks Payment to charge."""

    order_id: str
    amount: int


MESSAGES = [ChargePayment, SagaReply]


def rss_mb() -> float:
    """This process's resident memory in MB (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Service:
    """One bounded context: a store on its own schema, its relay to ``out`` and its
    consumer of ``into``, each run in a thread of its own."""

    def __init__(
        self, schema: str, source: str, out: servers.NatsPlace, into: servers.NatsPlace
    ) -> None:
        self.store = tidings.connect(
            servers.PG_URL,
            schema=schema,
            outbox=True,
            source=source,
            registry=tidings.EventRegistry(MESSAGES),
        )
        self.schema = schema
        self.out, self.into = out, into
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.opened: list[Any] = []
        self.baseline_done: dict[str, float] = {}

    def start(self, handlers: Handlers) -> None:
        """Run the relay and the consumer."""
        publisher = open_publisher(
            servers.NATS, stream=self.out.stream, subject_prefix=self.out.prefix
        )
        subscription = open_subscription(
            servers.NATS, "bench", stream=self.into.stream, subject_prefix=self.into.prefix
        )
        self.opened += [publisher, subscription]
        relay = self.store.relay(publisher)
        consumer = self.store.consumer(subscription, handlers, fetch_timeout=0.05)
        self.threads += [
            threading.Thread(target=relay.run, args=(self.stop,), daemon=True),
            threading.Thread(target=consumer.run, args=(self.stop,), daemon=True),
        ]
        for thread in self.threads[-2:]:
            thread.start()

    def routing(self, saga_replies: Handlers) -> Handlers:
        """One consumer takes both kinds of reply: the baseline's (their saga id starts
        ``base-``, no saga has it) are timed here, the others go to the orchestrator."""
        to_saga = saga_replies.for_class(SagaReply)[0].fn

        def route(reply: SagaReply, uow: UnitOfWork) -> None:
            if not reply.saga_id.startswith("base-"):
                to_saga(reply, uow)
                return
            uow.transaction.on_commit(
                lambda: self.baseline_done.setdefault(reply.saga_id, time.time())
            )

        router = Handlers()
        router.add(SagaReply, "orders.replies", route)
        return router

    def close(self) -> None:
        """Stop the threads and close everything."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for thing in self.opened:
            thing.close()
        self.store.close()


def payment_handlers(table_name: str) -> Handlers:
    """Payment: charge once per idempotency key and reply that it is done."""

    def on_charge(command: ChargePayment, uow: UnitOfWork) -> None:
        uow.execute(
            f"INSERT INTO {table_name} (key, amount) VALUES (:k, :a) ON CONFLICT DO NOTHING",
            {"k": command.idempotency_key or command.order_id, "a": command.amount},
        )
        uow.send(command.succeeded(payment_tx=f"tx-{command.order_id}"), key=command.saga_id)

    handlers = Handlers()
    handlers.add(ChargePayment, "payments.charge", on_charge)
    return handlers


def definition(orders: str, deadline: float) -> SagaDefinition:
    """create-order (local) -> charge (remote) -> confirm (local)."""

    def create(ctx: StepContext) -> None:
        ctx.uow.execute(
            f"INSERT INTO {orders} (id, status) VALUES (:id, 'PENDING')", {"id": ctx.data["id"]}
        )

    def charge(ctx: StepContext) -> None:
        ctx.send(ChargePayment(order_id=ctx.data["id"], amount=39))

    def confirm(ctx: StepContext) -> None:
        ctx.uow.execute(f"UPDATE {orders} SET status = 'CONFIRMED' WHERE id = :id", ctx.data)

    return SagaDefinition(
        "bench-order",
        [
            Step("create-order", create),
            Step("charge", charge, deadline=deadline),
            Step("confirm", confirm),
        ],
    )


@contextmanager
def orchestrating(sagas: Any) -> Iterator[None]:
    """An orchestrator thread: drive due sagas, pausing 5 ms when none is due."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if sagas.run_once() == 0:
                stop.wait(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


STARTERS = 4  # threads calling start: one alone cannot offer the rate (a start commits 5 times)


def steady(rate: float, seconds: float, start: Callable[[int], None]) -> int:
    """Call ``start(n)`` ``rate`` times a second for ``seconds`` from ``STARTERS``
    threads, each on its own schedule; return how many."""
    count = int(rate * seconds)
    begin = time.perf_counter()

    def starter(first: int) -> None:
        for n in range(first, count, STARTERS):
            wait = begin + n / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            start(n)

    in_parallel(starter)
    return count


def in_parallel(work: Callable[[int], None]) -> None:
    """``work(0)`` to ``work(STARTERS - 1)``, each in a thread; wait for all."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def saga_durations(store: tidings.Store, saga_type: str) -> tuple[list[float], float, float]:
    """Each completed saga's duration, and the first start and last completion times."""
    tables = store.database.tables  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(
            f"SELECT t.saga_id, t.kind, t.at FROM {tables['saga_transitions']} t"
            f" JOIN {tables['sagas']} s ON s.saga_id = t.saga_id"
            " WHERE s.saga_type = :type AND t.kind IN ('saga_started', 'saga_completed')",
            {"type": saga_type},
        ).fetchall()
    started = {r[0]: float(r[2]) for r in rows if r[1] == "saga_started"}
    ended = {r[0]: float(r[2]) for r in rows if r[1] == "saga_completed"}
    durations = [ended[s] - started[s] for s in ended]
    return durations, min(started.values()), max(ended.values(), default=float("nan"))


def wait_for(done: Callable[[], bool], patience: float = 120.0) -> None:
    deadline = time.monotonic() + patience
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class Figures:
    """What one run measured."""

    saga: list[float]
    saga_rate: float
    base: list[float]
    base_rate: float
    rss: tuple[float, float]
    threads: tuple[int, int]
    start_seconds: float
    still_waiting: int
    moved: int
    pass_ms: float


def measure_baseline(
    order: Service, orders: str, args: argparse.Namespace
) -> tuple[list[float], float]:
    """The same command and reply without a saga, at the same rate."""
    done, sent = order.baseline_done, {}

    def send_plain(n: int) -> None:
        key = f"base-{n}"
        sent[key] = time.time()
        with order.store.unit_of_work() as uow:
            uow.execute(f"INSERT INTO {orders} (id, status) VALUES (:id, 'PENDING')", {"id": key})
            uow.send(ChargePayment(order_id=key, amount=39, saga_id=key, step="charge"), key=key)

    planned = steady(args.rate, args.seconds, send_plain)
    wait_for(lambda: len(done) >= planned)
    base = [done[k] - sent[k] for k in done if k in sent]
    return base, len(done) / (max(done.values()) - min(sent.values()))


def measure_sagas(
    order: Service, sagas: Any, order_saga: SagaDefinition, args: argparse.Namespace
) -> tuple[list[float], float]:
    """Sagas started at the steady rate, driven by an orchestrator thread."""
    with orchestrating(sagas):
        planned = steady(
            args.rate, args.seconds, lambda n: sagas.start(order_saga, {"id": f"o-{n}"})
        )
        wait_for(lambda: len(sagas.listing("COMPLETED", planned + 1)) >= planned)
    durations, first, last = saga_durations(order.store, order_saga.name)
    return durations, len(durations) / (last - first)


def measure_waiting(order: Service, count: int) -> dict[str, Any]:
    """``count`` sagas waiting on a reply that never comes: memory and threads."""

    def charge(ctx: StepContext) -> None:
        ctx.send(ChargePayment(order_id="w", amount=1))

    waiting_definition = SagaDefinition("bench-waiting", [Step("charge", charge, deadline=3600.0)])
    waiting = order.store.sagas([waiting_definition])
    waiting.start(waiting_definition, {"n": -1})  # warm: every statement seen once
    for _ in range(3):
        waiting.run_once()
    gc.collect()
    rss, threads = rss_mb(), threading.active_count()
    begin = time.perf_counter()
    in_parallel(
        lambda first: [
            waiting.start(waiting_definition, {"n": n}) for n in range(first, count, STARTERS)
        ]
    )
    start_seconds = time.perf_counter() - begin
    moved = sum(waiting.run_once() for _ in range(10))
    gc.collect()
    passes = []
    for _ in range(20):
        pass_begin = time.perf_counter()
        waiting.run_once()
        passes.append(time.perf_counter() - pass_begin)
    return {
        "rss": (rss, rss_mb()),
        "threads": (threads, threading.active_count()),
        "start_seconds": start_seconds,
        "still_waiting": len(waiting.listing("RUNNING", count + 10)),
        "moved": moved,
        "pass_ms": percentile(passes, 50) * 1000,
    }


def run(args: argparse.Namespace) -> Figures:
    """Set both services up on fresh schemas and streams, measure, tear down."""
    with ExitStack() as stack:
        to_payments = stack.enter_context(servers.nats_stream())
        to_orders = stack.enter_context(servers.nats_stream())
        order = Service(stack.enter_context(servers.pg_schema()), "orders", to_payments, to_orders)
        payment = Service(
            stack.enter_context(servers.pg_schema()), "payments", to_orders, to_payments
        )
        stack.callback(order.close)
        stack.callback(payment.close)
        orders, charges = f"{order.schema}.orders", f"{payment.schema}.charges"
        with order.store.unit_of_work() as uow:
            uow.execute(f"CREATE TABLE {orders} (id TEXT PRIMARY KEY, status TEXT)")
        with payment.store.unit_of_work() as uow:
            uow.execute(f"CREATE TABLE {charges} (key TEXT PRIMARY KEY, amount INTEGER)")
        order_saga = definition(orders, 60.0)
        sagas = order.store.sagas([order_saga])
        payment.start(payment_handlers(charges))
        order.start(order.routing(sagas.reply_handlers()))
        base, base_rate = measure_baseline(order, orders, args)
        saga, saga_rate = measure_sagas(order, sagas, order_saga, args)
        payment.stop.set()  # from here on Payment answers nothing
        for thread in payment.threads:
            thread.join(timeout=30)
        waiting = measure_waiting(order, args.waiting)
    return Figures(saga, saga_rate, base, base_rate, **waiting)


def print_figures(figures: Figures, args: argparse.Namespace) -> None:
    """The tables."""
    print(f"\nSteady load: {args.rate:g} starts/s for {args.seconds:g} s (NATS, PostgreSQL)\n")
    rows = [
        [
            name,
            f"{rate:,.1f}",
            f"{percentile(d, 50) * 1000:,.1f}",
            f"{percentile(d, 99) * 1000:,.1f}",
            str(len(d)),
        ]
        for name, rate, d in (
            ("saga: create-order, charge (remote), confirm", figures.saga_rate, figures.saga),
            ("baseline: the same command and reply, no saga", figures.base_rate, figures.base),
        )
    ]
    print(table(["what", "per s", "p50 ms", "p99 ms", "count"], rows))
    extra = (percentile(figures.saga, 50) - percentile(figures.base, 50)) * 1000
    ratio = percentile(figures.saga, 50) / percentile(figures.base, 50)
    print(f"\nthe saga at p50: {extra:,.1f} ms more than the bare round trip ({ratio:.2f}x)")
    print(f"\nWaiting: {args.waiting:,} sagas waiting on a reply that never comes")
    print(f"(target: {RATE_TARGET_NOTE})\n")
    (rss0, rss1), (t0, t1) = figures.rss, figures.threads
    print(
        table(
            ["", "before", "after", "growth"],
            [
                ["resident memory (MB)", f"{rss0:,.1f}", f"{rss1:,.1f}", f"{rss1 - rss0:,.1f}"],
                ["threads", str(t0), str(t1), str(t1 - t0)],
            ],
        )
    )
    print(
        f"\nstarted in {figures.start_seconds:,.1f} s; still waiting: {figures.still_waiting:,};"
        f" transitions made by 10 orchestrator passes over them: {figures.moved};"
        f" a pass over them took {figures.pass_ms:,.1f} ms (median of 20)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="saga starts per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--waiting", type=int, default=10_000)
    args = parser.parse_args()
    print(f"tidings remote-step saga benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    print_figures(run(args), args)
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()

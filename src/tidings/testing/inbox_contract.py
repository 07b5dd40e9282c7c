"""InboxContract: exactly-once effects from at-least-once delivery, on every backend.

Subclass it with a ``make_store`` fixture (as for ``StoreContract``). The handlers here
keep their effect in the store itself (a ``Stock`` aggregate's events), so the suite runs
on the memory backend too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

import pytest

from tidings.application.backoff import Backoff
from tidings.application.handling import Delivery, Handlers, InboxProcessor, Verdict
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.ports import Inbox, Transaction
from tidings.records import EventRecord
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.contract import Counted, Counter, new_id

MakeStore = Callable[..., Store]


@dataclass(frozen=True, kw_only=True)
class StockMoved(DomainEvent):
    """Stock of a product changed by ``delta``."""

    delta: int
    reason: str


class Stock(Aggregate):
    """A product's stock, kept as the sum of its StockMoved events."""

    def move(self, delta: int, reason: str) -> None:
        """Record a change of stock."""
        self.record(StockMoved(delta=delta, reason=reason))


def stock_of(store: Store, product: str) -> int:
    """The product's stock: 100 plus every committed move."""
    return 100 + sum(e.delta for e in store.read_stream(product))  # type: ignore[attr-defined]


def decrease_stock(product: str) -> Callable[[Counted, UnitOfWork], None]:
    """A handler that takes ``event.step`` units of ``product`` off the stock."""

    def handle(event: Counted, uow: UnitOfWork) -> None:
        stock = Stock(product, version=uow_version(uow, product))
        stock.move(-event.step, f"order {event.aggregate_id}")
        uow.track(stock)

    return handle


def uow_version(uow: UnitOfWork, stream: str) -> int:
    """The stream's version as the unit of work's transaction sees it."""
    return uow.stream_version(stream)


def placed(store: Store, step: int = 2) -> Delivery:
    """A committed Counted event (an 'OrderPlaced' for 2 units), as a delivery."""
    counter = Counter(new_id("order"))
    counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    record = store.codec.encode(uow.published[0])
    return Delivery(record.data, record)


class InboxContract:
    """Duplicates skipped, failures undone and retried, bad input buried, batches safe."""

    #: Dialects whose write transactions run one at a time (a second waits at its start).
    serialised_dialects: ClassVar[frozenset[str]] = frozenset({"sqlite", "memory"})

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store that knows the contract's events."""
        return make_store(EventRegistry([Counted, StockMoved]))

    def processor(self, store: Store, handlers: Handlers, **options: object) -> InboxProcessor:
        """A processor with no jitter."""
        options.setdefault("backoff", Backoff(base=1.0, jitter=0.0))
        return store.processor(handlers, **options)

    def test_an_event_delivered_three_times_decreases_the_stock_once(self, store: Store) -> None:
        """The spec's example: OrderPlaced three times, stock 100 -> 98, not 94."""
        product = new_id("sku")
        handlers = Handlers()
        handlers.add(Counted, "inventory.decrease", decrease_stock(product))
        processor = self.processor(store, handlers)
        delivery = placed(store)
        verdicts = [processor.process([delivery])[0] for _ in range(3)]
        assert stock_of(store, product) == 98
        assert [v.applied for v in verdicts] == [("inventory.decrease",), (), ()]
        assert [v.duplicates for v in verdicts] == [
            (),
            ("inventory.decrease",),
            ("inventory.decrease",),
        ]
        assert all(v.ack for v in verdicts)

    def test_a_failing_handler_is_undone_counted_and_retried(self, store: Store) -> None:
        """Its writes roll back, the message is redelivered later, and the retry applies it."""
        product = new_id("sku")
        calls: list[int] = []

        def flaky(event: Counted, uow: UnitOfWork) -> None:
            decrease_stock(product)(event, uow)
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("warehouse API timed out")

        handlers = Handlers()
        handlers.add(Counted, "inventory.flaky", flaky)
        processor = self.processor(store, handlers)
        delivery = placed(store)
        [first] = processor.process([delivery])
        assert (first.ack, first.retry_in) == (False, 1.0)
        assert stock_of(store, product) == 100
        [second] = processor.process([delivery])
        assert second.ack
        assert second.applied == ("inventory.flaky",)
        assert stock_of(store, product) == 98

    def test_a_handler_that_keeps_failing_is_buried_and_the_message_acknowledged(
        self, store: Store
    ) -> None:
        """After max_attempts the message is a dead letter for that handler, with the error."""
        handlers = Handlers()

        def broken(event: Counted, uow: UnitOfWork) -> None:
            raise ValueError("no such warehouse")

        handlers.add(Counted, "inventory.broken", broken)
        processor = self.processor(store, handlers, max_attempts=3)
        delivery = placed(store)
        verdicts = [processor.process([delivery])[0] for _ in range(3)]
        assert [v.ack for v in verdicts] == [False, False, True]
        assert store.inbox is not None
        [letter] = store.inbox.dead_letters()
        assert letter.handler == "inventory.broken"
        assert letter.attempts == 3
        assert "ValueError: no such warehouse" in letter.reason
        assert delivery.record is not None
        assert letter.event_id == delivery.record.event_id
        assert letter.body == delivery.body

    def test_one_handler_failing_does_not_repeat_another_on_redelivery(self, store: Store) -> None:
        """Two handlers, one fails: on redelivery the one that worked is skipped."""
        product = new_id("sku")
        failing = [True]

        def notify(event: Counted, uow: UnitOfWork) -> None:
            if failing[0]:
                raise RuntimeError("smtp down")

        handlers = Handlers()
        handlers.add(Counted, "inventory.decrease", decrease_stock(product))
        handlers.add(Counted, "notification.email", notify)
        processor = self.processor(store, handlers)
        delivery = placed(store)
        [first] = processor.process([delivery])
        failing[0] = False
        [second] = processor.process([delivery])
        assert (first.applied, first.ack) == (("inventory.decrease",), False)
        assert (second.applied, second.duplicates) == (
            ("notification.email",),
            ("inventory.decrease",),
        )
        assert stock_of(store, product) == 98

    def test_bad_input_is_buried_and_the_good_messages_around_it_are_handled(
        self, store: Store
    ) -> None:
        """Unreadable and undecodable messages become dead letters; the rest of the batch works."""
        product = new_id("sku")
        handlers = Handlers()
        handlers.add(Counted, "inventory.decrease", decrease_stock(product))
        processor = self.processor(store, handlers)
        good = placed(store)
        assert good.record is not None
        wrong_type = _with(good, data=b'{"step": "two"}')
        unreadable = Delivery(b"\xff{", None, "not valid JSON")
        verdicts = processor.process([unreadable, good, wrong_type])
        assert all(v.ack for v in verdicts)
        assert stock_of(store, product) == 98
        assert store.inbox is not None
        reasons = [d.reason for d in store.inbox.dead_letters()]
        assert reasons[0] == "not valid JSON"
        assert "$.step" in reasons[1]

    def test_an_idempotent_handler_opts_out_of_the_inbox(self, store: Store) -> None:
        """A handler marked idempotent runs on every delivery (it must be safe to repeat)."""
        seen: list[str] = []
        handlers = Handlers()
        handlers.add(
            Counted, "stats.last_order", lambda e, uow: seen.append(e.event_id), idempotent=True
        )
        processor = self.processor(store, handlers)
        delivery = placed(store)
        processor.process([delivery, delivery])
        assert len(seen) == 2

    def test_a_failure_in_one_message_keeps_the_others_of_its_batch(self, store: Store) -> None:
        """Savepoints: message 2 fails, messages 1 and 3 of the same batch are applied."""
        product = new_id("sku")

        def picky(event: Counted, uow: UnitOfWork) -> None:
            decrease_stock(product)(event, uow)
            if event.step == 5:
                raise RuntimeError("odd quantity")

        handlers = Handlers()
        handlers.add(Counted, "inventory.picky", picky)
        processor = self.processor(store, handlers)
        batch = [placed(store, 1), placed(store, 5), placed(store, 3)]
        verdicts = processor.process(batch)
        assert [v.ack for v in verdicts] == [True, False, True]
        assert stock_of(store, product) == 96

    def test_begin_many_marks_each_pair_once(self, store: Store) -> None:
        """One call for many pairs: fresh ones are marked, a pair repeated in the call or
        processed before reports False, and a rollback undoes the marks."""
        first, second = placed(store).record, placed(store).record
        assert first is not None
        assert second is not None
        inbox = store.inbox
        assert inbox is not None
        with store.database.transaction() as tx:
            assert inbox.begin(tx, first, "a")
        keys = [(first, "a"), (first, "b"), (second, "a"), (first, "b")]
        with pytest.raises(RuntimeError), store.database.transaction() as tx:
            assert inbox.begin_many(tx, keys) == [False, True, True, False]
            raise RuntimeError("roll back")
        with store.database.transaction() as tx:
            assert inbox.begin_many(tx, keys) == [False, True, True, False]
            assert inbox.begin_many(tx, []) == []

    def test_a_handler_that_fails_in_a_batch_runs_once_for_that_delivery(
        self, store: Store
    ) -> None:
        """The batch pass is undone and the batch handled one by one, where the failure
        counts without running the handler a second time; the others apply once."""
        product = new_id("sku")
        calls: list[int] = []

        def picky(event: Counted, uow: UnitOfWork) -> None:
            calls.append(event.step)
            decrease_stock(product)(event, uow)
            if event.step == 5:
                raise RuntimeError("odd quantity")

        handlers = Handlers()
        handlers.add(Counted, "inventory.picky", picky)
        processor = self.processor(store, handlers)
        verdicts = processor.process([placed(store, 1), placed(store, 5), placed(store, 3)])
        assert [v.ack for v in verdicts] == [True, False, True]
        assert calls.count(5) == 1
        assert stock_of(store, product) == 96

    def test_a_retried_event_holds_back_the_later_events_of_its_aggregate(
        self, store: Store
    ) -> None:
        """Events 1 and 2 of one aggregate in a batch, 1 fails: 2 is not handled before it."""
        applied: list[int] = []
        failing = [True]

        def ordered(event: Counted, uow: UnitOfWork) -> None:
            if event.aggregate_version == 1 and failing[0]:
                raise RuntimeError("not yet")
            applied.append(event.aggregate_version)

        handlers = Handlers()
        handlers.add(Counted, "ordered", ordered)
        processor = self.processor(store, handlers)
        counter = Counter(new_id("order"))
        counter.increment(1)
        counter.increment(2)
        with store.unit_of_work() as uow:
            uow.track(counter)
        records = [store.codec.encode(e) for e in uow.published]
        batch = [Delivery(r.data, r) for r in records]
        first = processor.process(batch)
        assert [(v.ack, v.retry_in) for v in first] == [(False, 1.0), (False, 1.0)]
        assert applied == []
        failing[0] = False
        assert all(v.ack for v in processor.process(batch))
        assert applied == [1, 2]

    def test_the_same_event_handled_by_two_threads_at_once_applies_once(self, store: Store) -> None:
        """Parallel duplicates (two consumers got the same message) take effect once.

        The first consumer's transaction stays open, its inbox row written, until the
        second has begun its own. Where transactions run side by side (PostgreSQL), the
        first also waits until the second marks the event: the second then finds the
        uncommitted row, waits for it instead of answering, and skips the event once the
        first commits. Where one write transaction runs at a time (SQLite's write lock,
        the memory store's lock: ``serialised_dialects``), the second waits at its start;
        the test then shows that it finds the row the first committed and skips.
        """
        product = new_id("sku")
        first_inside = threading.Event()
        second = _Watch()
        seen: dict[str, bool] = {}
        side_by_side = store.database.dialect not in self.serialised_dialects

        def hold(event: Counted, uow: UnitOfWork) -> None:
            if not first_inside.is_set():  # the first consumer: hold its transaction open
                first_inside.set()
                seen["second began"] = second.begins.wait(30)
                if side_by_side:
                    seen["second marks"] = second.marks.wait(30)
                    # A check of a negative: the second must not get its answer while the
                    # first's row is uncommitted (it waits for the row's fate).
                    seen["second answered early"] = second.answered.wait(0.5)
            decrease_stock(product)(event, uow)

        handlers = Handlers()
        handlers.add(Counted, "inventory.hold", hold)
        delivery = placed(store)
        verdicts: list[Verdict] = []
        errors: list[BaseException] = []

        def run(processor: InboxProcessor) -> None:
            try:
                verdicts.extend(processor.process([delivery]))
            except BaseException as exc:
                errors.append(exc)

        assert store.inbox is not None
        first = threading.Thread(target=run, args=(self.processor(store, handlers),))
        watched = InboxProcessor(
            store,
            second.inbox(store.inbox),
            handlers,
            second.database(store.database),
            backoff=Backoff(base=1.0, jitter=0.0),
        )
        first.start()
        assert first_inside.wait(30), "the first consumer never ran its handler"
        other = threading.Thread(target=run, args=(watched,))
        other.start()
        for thread in (first, other):
            thread.join(60)
        assert errors == [], errors
        assert seen["second began"], "the second consumer never began its transaction"
        if side_by_side:
            assert seen["second marks"], "the second never marked the event beside the first"
            assert not seen["second answered early"], "the inbox answered before the commit"
        outcomes = sorted((v.applied, v.duplicates) for v in verdicts)
        assert outcomes == [((), ("inventory.hold",)), (("inventory.hold",), ())], (
            f"expected one consumer to apply and one to skip; (applied, skipped): {outcomes}"
        )
        assert stock_of(store, product) == 98, f"stock {stock_of(store, product)}, not 98"

    def test_processed_rows_are_deleted_after_the_dedup_window(self, store: Store) -> None:
        """Retention: only processed rows older than the window go."""
        handlers = Handlers()
        handlers.add(Counted, "noop", lambda e, uow: None)
        processor = self.processor(store, handlers)
        processor.process([placed(store), placed(store)])
        assert store.inbox is not None
        assert store.inbox.delete_processed(3600.0, 100) == 0
        time.sleep(0.05)
        assert store.inbox.delete_processed(0.01, 100) == 2


def _with(delivery: Delivery, **changes: object) -> Delivery:
    """The same delivery with a new event id and other record fields changed."""
    assert delivery.record is not None
    record = replace(delivery.record, event_id=new_id("e"), **changes)  # type: ignore[arg-type]
    return Delivery(record.data, record)


class _Watch:
    """Events a consumer's database and inbox set as its transaction gets under way."""

    def __init__(self) -> None:
        self.begins = threading.Event()  # it asked for its transaction
        self.marks = threading.Event()  # it asked its inbox to mark the event
        self.answered = threading.Event()  # its inbox answered

    def database(self, inner: Any) -> Any:
        """``inner``, noting when a transaction is asked for."""
        watch = self

        class Database:
            def transaction(self) -> AbstractContextManager[Transaction]:
                watch.begins.set()
                return cast("AbstractContextManager[Transaction]", inner.transaction())

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Database()

    def inbox(self, inner: Inbox) -> Any:
        """``inner``, noting when ``begin_many`` is called and when it answers."""
        watch = self

        class Watched:
            def begin_many(
                self, tx: Transaction, keys: Sequence[tuple[EventRecord, str]]
            ) -> list[bool]:
                watch.marks.set()
                fresh = inner.begin_many(tx, keys)
                watch.answered.set()
                return fresh

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Watched()

"""The inbox consumer under fire, on real brokers: killed again and again while orders
flow, and fed a flood of malformed messages published with the brokers' raw clients."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import tidings
from tidings.adapters.brokers import open_publisher, open_subscription
from tidings.errors import BrokerUnavailableError
from tidings.examples.shop.inventory import OPENING_STOCK, handlers
from tidings.examples.shop.orders import SHOP_EVENTS, Order
from tidings.ports import OutgoingMessage, Subscription
from tidings.serialization.cloudevents import from_message, to_message
from tidings.serialization.codec import JsonCodec
from tidings.workers.consumer import Consumer

from .brokers import run_nats, unique
from .faults import PATIENCE, kill_mid_work, pika_channel, to_be_killed, wait_until

HOT_SKUS = [f"HOT-{n}" for n in range(10)]
HANDLER = "inventory.decrease-stock"


class Feed:
    """A broker topology an Inventory consumer reads: a RabbitMQ exchange and the
    consumer's quorum queue bound to ``#``, or a JetStream stream and durable consumer."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        self.topic = unique("tidings-feed-")
        if kind == "rabbitmq":
            self.name = f"{self.topic}-inventory"
            self.options: dict[str, Any] = {"exchange": self.topic, "binding_keys": ["#"]}
            # Declared as the consumer will declare it, before anything is published.
            with pika_channel(self.url) as channel:
                channel.exchange_declare(self.topic, exchange_type="topic", durable=True)
                channel.queue_declare(self.name, durable=True, arguments={"x-queue-type": "quorum"})
                channel.queue_bind(self.name, self.topic, routing_key="#")
        else:
            self.name = "inventory"
            self.stream, self.prefix = self.topic.upper().replace("-", "_"), self.topic
            self.options = {"stream": self.stream, "subject_prefix": self.prefix}
            run_nats(url, self._create_stream)

    async def _create_stream(self, js: Any) -> None:
        await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])

    def cli_options(self) -> list[str]:
        """``-o`` options of ``tidings consume`` for this topology (NATS redelivers what a
        killed consumer held after two seconds)."""
        if self.kind == "rabbitmq":
            options = {"exchange": self.topic, "binding_keys": "#"}
        else:
            options = {**self.options, "ack_wait": 2}
        return [part for k, v in options.items() for part in ("-o", f"{k}={v}")]

    def subscription(self) -> Subscription:
        """An in-process subscription of the consumer's queue or durable consumer."""
        return open_subscription(self.url, self.name, **self.options)

    def publish(self, messages: list[OutgoingMessage]) -> None:
        """Publish with tidings' publisher and its confirms, again while the broker is
        down (another run's outage test may stop it): a copy more is what inboxes are for."""
        options = {"exchange": self.topic} if self.kind == "rabbitmq" else dict(self.options)
        publisher = open_publisher(self.url, **options)
        deadline = time.monotonic() + PATIENCE
        try:
            while True:
                try:
                    assert publisher.publish(messages) == [None] * len(messages)
                    return
                except BrokerUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            publisher.close()

    def publish_raw(self, bodies: list[bytes]) -> None:
        """Publish bodies as they are, with pika or nats-py (confirmed, in order)."""
        if self.kind == "rabbitmq":
            import pika

            with pika_channel(self.url) as channel:
                channel.confirm_delivery()
                for body in bodies:
                    channel.basic_publish(
                        self.topic,
                        "OrderPlaced",
                        body,
                        pika.BasicProperties(delivery_mode=2),
                        mandatory=True,
                    )
            return

        async def send(js: Any) -> None:
            for body in bodies:
                await js.publish(f"{self.prefix}.OrderPlaced", body, timeout=30)

        run_nats(self.url, send)

    def cleanup(self) -> None:
        """Delete the queue and exchange, or the stream (and its consumer)."""
        if self.kind == "rabbitmq":
            with pika_channel(self.url) as channel:
                channel.queue_delete(self.name)
                channel.exchange_delete(self.topic)
            return

        async def delete(js: Any) -> None:
            await js.delete_stream(self.stream)

        run_nats(self.url, delete)


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def feed(request: pytest.FixtureRequest) -> Iterator[Feed]:
    """Fresh topology on the broker, deleted afterwards."""
    made = Feed(request.param, request.getfixturevalue(f"{request.param}_url"))
    yield made
    made.cleanup()


def in_schema(pg_url: str, schema: str) -> str:
    """The URL with ``schema`` first on the search path, where the shop's stock table goes."""
    return f"{pg_url}?options={quote(f'-csearch_path={schema}')}"


class Orders:
    """OrderPlaced messages: each order takes 1-5 of its own product and 1 of a hot one,
    so the stock of every order's own product shows whether it was applied once."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.codec = JsonCodec(tidings.EventRegistry(SHOP_EVENTS))
        self.own: dict[str, int] = {}  # product -> quantity taken by its one order
        self.hot: dict[str, int] = dict.fromkeys(HOT_SKUS, 0)

    def next(self, count: int) -> list[OutgoingMessage]:
        """``count`` new orders as CloudEvents."""
        messages = []
        for _ in range(count):
            order = Order(f"o-{uuid.uuid4().hex[:12]}", "c-1")
            sku, quantity = f"SKU-{uuid.uuid4().hex[:12]}", self.rng.randint(1, 5)
            hot = self.rng.choice(HOT_SKUS)
            order.add_line(sku, quantity, 250)
            order.add_line(hot, 1, 990)
            order.place()
            [event] = order.pull_events()
            self.own[sku], self.hot[hot] = quantity, self.hot[hot] + 1
            messages.append(to_message(self.codec.encode(event), "orders"))
        return messages

    def expected_stock(self) -> dict[str, int]:
        """Every product's stock once each order was applied exactly once."""
        taken = {**self.own, **{sku: n for sku, n in self.hot.items() if n}}
        return {sku: OPENING_STOCK - n for sku, n in taken.items()}


def stock_table(store: tidings.Store) -> dict[str, int]:
    """The Inventory's stock table (created by its handler on first use)."""
    with store.unit_of_work() as uow:
        return dict(uow.execute("SELECT sku, on_hand FROM shop_stock").fetchall())


def inbox_rows(store: tidings.Store) -> int:
    """Rows in the Inventory's inbox."""
    table = store.database.tables["inbox"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        return int(uow.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def start_consumer(
    db: str,
    schema: str,
    feed: Feed,
    log: Path,
    *,
    killed: bool = False,
    extra: Sequence[str] = ("--handlers", "tidings.examples.shop.inventory:handlers"),
) -> subprocess.Popen[bytes]:
    """``tidings consume`` of the shop's Inventory handlers (or the handlers and options
    in ``extra``), output to ``log`` (``killed``: the test will SIGKILL it)."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "tidings", "consume", "--db", db, "--schema", schema),
                *("--from", feed.url, "--name", feed.name, "--every", "5"),
                *extra,
                *feed.cli_options(),
            ],
            stdout=output,
            stderr=output,
            env=to_be_killed() if killed else None,
        )


@pytest.mark.postgres
@pytest.mark.parametrize(
    "run",
    [
        pytest.param((6, 3_000), id="6-kills"),
        pytest.param((20, 10_000), id="20-kills", marks=pytest.mark.slow),
    ],
)
def test_a_consumer_killed_again_and_again_while_orders_flow_applies_each_order_once(
    pg_url: str, schema: str, feed: Feed, tmp_path: Path, run: tuple[int, int]
) -> None:
    """``count`` OrderPlaced published while ``tidings consume`` is SIGKILLed ``kills``
    times at random moments: every product's stock ends exact, each order applied once.
    The suite runs 6 kills over 3,000 orders; ``-m slow`` runs 20 over 10,000."""
    kills, count = run
    rng, orders, log = random.Random(6), Orders(seed=6), tmp_path / "consumer.log"
    db = in_schema(pg_url, schema)
    inventory = tidings.connect(db, schema=schema)
    try:
        for _ in range(kills):
            batch = orders.next(count // kills)
            publishing = threading.Thread(target=feed.publish, args=(batch,))
            publishing.start()
            before = inbox_rows(inventory)
            consumer = start_consumer(db, schema, feed, log, killed=True)
            kill_mid_work(
                consumer,
                lambda: inbox_rows(inventory),
                before,
                "the consumer applied a batch",
                rng=rng,
                most=0.3,
                log=log,
            )
            publishing.join()
        final = tmp_path / "final-consumer.log"
        last = start_consumer(db, schema, feed, final)
        started = f"consumer {feed.name}:"  # printed once SIGTERM is handled
        wait_until(lambda: started in final.read_text(), "the last consumer runs", alive=[last])
        wait_until(
            lambda: inbox_rows(inventory) == count,
            "every order is applied",
            alive=[last],
            log=final,
        )
        last.terminate()
        assert last.wait(timeout=PATIENCE) == 0, final.read_text()
        assert stock_table(inventory) == orders.expected_stock()
        assert inventory.inbox is not None
        assert inventory.inbox.dead_letters() == []
    finally:
        inventory.close()


LIMIT = 256 * 1024  # the fuzzed consumer reads messages up to this size
ENVELOPE = ("specversion", "id", "source", "type", "subject", "time", "schemaversion")
WRONG_TYPES: dict[str, list[Any]] = {
    "id": [5, [], "", None],
    "source": [{}, 1.5, ""],
    "type": [True, ["OrderPlaced"], ""],
    "subject": [7, ""],
    "time": [12, "yesterday", "2024-13-45T00:00:00Z"],
    "schemaversion": ["1", 0, -3, 1.5, 2**31],
    "aggregateversion": ["x", 0, None, 2**31, 10**30],
}
ODD_VALUES: list[tuple[str, Any, str]] = [
    ("specversion", "0.3", "specversion is '0.3'"),
    ("datacontenttype", "text/xml", "datacontenttype is 'text/xml'"),
    ("data_base64", "e30=", "data_base64 is not supported"),
    ("time", "2024-05-01T12:00:00", "time has no UTC offset"),
    ("time", "9999-12-31T23:59:59-01:00", "time .* out of range"),
    ("time", "0001-01-01T00:00:00+01:00", "time .* out of range"),
    ("data", [1, 2], "data is missing or not a JSON object"),
    ("data", "text", "data is missing or not a JSON object"),
    ("type", "OrderShipped", "no event class is registered for type 'OrderShipped'"),
    ("schemaversion", 99, "schema version 99"),
    ("id", "order\u0000placed", "id .*control character"),
    ("subject", "o-1\nBcc: x", "subject .*control character"),
    ("type", "Order\u0007Placed", "type .*control character"),
    ("source", "shop\u0085", "source .*control character"),
]
WRONG_DATA: dict[str, tuple[Any, str]] = {
    # field of OrderPlaced's data: (a wrong value, what the reason must point at)
    "customer_id": (5, "$.customer_id"),
    "total_cents": ("many", "$.total_cents"),
    "lines": ("BOOK-42", "$.lines"),
    "quantity": ("2", "$.lines[0].quantity"),
    "sku": (None, "$.lines[0].sku"),
}


class Fuzz:
    """Malformed messages, each unique and paired with what its dead letter's reason must
    say (a regular expression), made from valid orders by a seeded generator."""

    def __init__(self, seed: int) -> None:
        self.orders, self.rng = Orders(seed), random.Random(seed)
        self.bad: dict[bytes, str] = {}

    def valid(self) -> dict[str, Any]:
        """A fresh valid order as a JSON document (its stock is never counted)."""
        [message] = self.orders.next(1)
        return dict(json.loads(message.body))

    def add(self, body: bytes | dict[str, Any], reason: str) -> None:
        """Keep one bad message (a document is encoded as JSON)."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        assert raw not in self.bad
        self.bad[raw] = reason

    def changed(self, attribute: str, value: Any, reason: str, times: int) -> None:
        """``times`` valid orders with one attribute set to ``value``."""
        for _ in range(times):
            document = self.valid()
            document[attribute] = value
            self.add(document, reason)


def string_bytes(body: bytes) -> tuple[list[int], list[int]]:
    """Positions of plain characters inside JSON strings, and of the structural bytes
    (brackets, colons, commas, quotes) outside them."""
    inside, outside, in_string, escaped = [], [], False, False
    for i, byte in enumerate(body):
        if in_string:
            if escaped or byte == ord("\\"):
                escaped = not escaped
            elif byte == ord('"'):
                in_string = False
                outside.append(i)
            else:
                inside.append(i)
        elif byte == ord('"'):
            in_string = True
            outside.append(i)
        elif byte in b"{}[]:,":
            outside.append(i)
    return inside, outside


def make_fuzz(seed: int) -> Fuzz:
    """At least 1,000 malformed messages of every kind the consumer must survive."""
    fuzz = Fuzz(seed)
    add_non_events(fuzz)
    add_broken_envelopes(fuzz)
    add_broken_payloads(fuzz)
    add_mutants(fuzz)
    return fuzz


def add_non_events(fuzz: Fuzz) -> None:
    """Bytes that are not JSON, and JSON that is not an event."""
    rng = fuzz.rng
    for n in range(60):  # not JSON at all
        fuzz.add(f"not json {n}".encode(), "not valid JSON")
        fuzz.add(f'{{"specversion": "1.0", "id": "cut-{n}"'.encode(), "not valid JSON")
        fuzz.add(f"{{'single': 'quotes', 'n': {n}}}".encode(), "not valid JSON")
        fuzz.add(f'{{"trailing": {n},}}'.encode(), "not valid JSON")
        fuzz.add(rng.randbytes(rng.randint(8, 400)), "not valid JSON|not a tidings CloudEvent")
    for n in range(40):  # JSON, but not an object with the attributes of an event
        fuzz.add(json.dumps([n, "OrderPlaced"]).encode(), "not a tidings CloudEvent")
        fuzz.add(json.dumps(f"string {n}").encode(), "not a tidings CloudEvent")
        fuzz.add({"hello": n}, "missing required field")


def add_broken_envelopes(fuzz: Fuzz) -> None:
    """Valid orders with a CloudEvents attribute missing, mistyped or out of bounds."""
    for attribute in (*ENVELOPE, "aggregateversion"):  # a required attribute missing
        for _ in range(20):
            document = fuzz.valid()
            del document[attribute]
            fuzz.add(document, f"missing required field `{attribute}`")
    for attribute, values in WRONG_TYPES.items():  # an attribute of the wrong type or range
        for value in values:
            fuzz.changed(attribute, value, rf"\$\.{attribute}\b", 8)
    for attribute, value, reason in ODD_VALUES:  # well-typed, but not what an event is
        fuzz.changed(attribute, value, reason, 10)


def add_broken_payloads(fuzz: Fuzz) -> None:
    """Valid envelopes whose payload does not fit the class, is too large or not UTF-8."""
    for field, (value, where) in WRONG_DATA.items():  # the payload does not fit the class
        for _ in range(20):
            document = fuzz.valid()
            data = document["data"]
            (data["lines"][0] if field in ("quantity", "sku") else data)[field] = value
            fuzz.add(document, rf"does not fit OrderPlaced.*{re.escape(where)}")
    for _ in range(10):  # larger than the consumer reads
        document = fuzz.valid()
        document["data"]["customer_id"] = "c" * LIMIT
        fuzz.add(document, f"larger than the limit of {LIMIT} bytes")
    for _ in range(20):  # bytes that are not UTF-8 in a payload field no class reads
        document = fuzz.valid()
        document["data"]["note"] = "@@@@"
        fuzz.add(json.dumps(document).encode().replace(b"@@@@", b"\xff\xfe"), "UTF-8")


def add_mutants(fuzz: Fuzz) -> None:
    """Valid orders cut short, or with one byte broken (structural, or inside a string)."""
    rng = fuzz.rng
    for n in range(150):  # valid messages, mutated: cut short, or a byte broken
        body = json.dumps(fuzz.valid()).encode()
        inside, outside = string_bytes(body)
        if n % 3 == 0:
            fuzz.add(body[: rng.randrange(1, len(body) - 1)], "not valid JSON")
        else:
            at = rng.choice(outside if n % 3 == 1 else inside)
            fuzz.add(body[:at] + b"\xff" + body[at + 1 :], "not valid JSON|UTF-8")


def consumer_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> tidings.Store:
    """The Inventory's database: an SQLite file, or a PostgreSQL schema of its own."""
    registry = tidings.EventRegistry(SHOP_EVENTS)
    if backend == "sqlite":
        return tidings.connect(f"sqlite:///{tmp_path / 'inventory.db'}", registry=registry)
    schema, pg_url = request.getfixturevalue("schema"), request.getfixturevalue("pg_url")
    return tidings.connect(in_schema(pg_url, schema), schema=schema, registry=registry)


def processed_ids(store: tidings.Store) -> list[str]:
    """Event ids the Inventory's handler processed, per its inbox."""
    table = store.database.tables["inbox"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(
            f"SELECT event_id FROM {table} WHERE status = 'processed' AND handler_name = :name",
            {"name": HANDLER},
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    ("broker", "backend"),
    [
        pytest.param("rabbitmq", "postgresql", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
        pytest.param("nats", "sqlite", marks=pytest.mark.nats),
    ],
)
def test_a_flood_of_malformed_messages_is_dead_lettered_with_reasons_as_orders_apply_once(
    broker: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Over 1,000 malformed messages published raw among 400 valid orders (100 sent twice):
    the consumer never fails, each bad one is a dead letter whose reason names what is
    wrong, and each order is applied once."""
    feed = Feed(broker, request.getfixturevalue(f"{broker}_url"))
    store = consumer_store(backend, tmp_path, request)
    try:
        fuzz, good, rng = make_fuzz(seed=9), Orders(seed=10), random.Random(11)
        assert len(fuzz.bad) >= 1000
        valid = [m.body for m in good.next(400)]
        bodies = [*valid, *rng.sample(valid, 100), *fuzz.bad]
        rng.shuffle(bodies)
        feed.publish_raw(bodies)
        read = partial(from_message, max_bytes=LIMIT)
        processor = store.processor(handlers())
        consumer = Consumer(
            processor, feed.subscription(), read, inbox=store.inbox, fetch_timeout=0.5
        )
        try:
            wait_until(
                lambda: consumer.run_once() >= 0 and consumer.stats.received >= len(bodies),
                "every message was handled",
            )
            assert consumer.run_once() == 0  # nothing was left behind or sent round again
        finally:
            consumer.subscription.close()
        assert store.inbox is not None
        reasons = {d.body: d.reason for d in store.inbox.dead_letters(limit=len(bodies))}
        passed = {fuzz.bad[body]: body[:300] for body in set(fuzz.bad) - set(reasons)}
        assert not passed, f"bad messages taken for good: {passed}"
        assert set(reasons) == set(fuzz.bad)
        unclear = {
            body[:120]: (reasons[body], expected)
            for body, expected in fuzz.bad.items()
            if not re.search(expected, reasons[body])
        }
        assert not unclear, f"{len(unclear)} reasons do not say what is wrong: {unclear}"
        assert sorted(processed_ids(store)) == sorted(json.loads(b)["id"] for b in valid)
        assert stock_table(store) == good.expected_stock()
        stats = consumer.stats
        assert (stats.applied, stats.duplicates, stats.buried) == (400, 100, len(fuzz.bad))
    finally:
        store.close()
        feed.cleanup()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_message_the_postgresql_inbox_cannot_store_is_dead_lettered_and_its_batch_goes_on(
    rabbitmq_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Valid CloudEvents whose payload PostgreSQL's JSONB refuses (a U+0000 character, a
    number beyond its range) become dead letters saying so; the orders around them apply."""
    feed = Feed("rabbitmq", rabbitmq_url)
    store = consumer_store("postgresql", tmp_path, request)
    try:
        good = Orders(seed=12)
        first, text, number, last = (json.loads(m.body) for m in good.next(4))
        text["data"]["note"] = "before\u0000after"
        number["data"]["note"] = "@@"
        bodies = [json.dumps(document).encode() for document in (first, text, number, last)]
        bodies[2] = bodies[2].replace(b'"@@"', b"1e999999")  # beyond PostgreSQL's numeric
        feed.publish_raw(bodies)
        consumer = store.consumer(feed.subscription(), handlers(), fetch_timeout=0.5)
        try:
            wait_until(
                lambda: consumer.run_once() >= 0 and consumer.stats.received >= 4,
                "the four messages were handled",
            )
        finally:
            consumer.subscription.close()
        assert store.inbox is not None
        letters = {d.event_id: d.reason for d in store.inbox.dead_letters()}
        assert set(letters) == {text["id"], number["id"]}
        assert "the inbox cannot keep this message" in letters[text["id"]]
        assert "\\u0000 cannot be converted to text" in letters[text["id"]]
        assert "numeric" in letters[number["id"]]
        assert sorted(processed_ids(store)) == sorted([first["id"], last["id"]])
        skus = [d["data"]["lines"][0]["sku"] for d in (first, last)]
        assert all(stock_table(store)[sku] == good.expected_stock()[sku] for sku in skus)
    finally:
        store.close()
        feed.cleanup()


def random_text(rng: random.Random, length: int) -> str:
    """Printable text no index compresses."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(length))


@pytest.mark.postgres
def test_a_message_with_a_ten_kilobyte_id_is_dead_lettered_and_its_neighbours_apply(
    feed: Feed, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A valid CloudEvent whose id is 10 KB of random text, among 20 ordinary orders: the
    20 apply, and the one is a dead letter whose reason says how long its id is."""
    store = consumer_store("postgresql", tmp_path, request)
    try:
        good, rng = Orders(seed=13), random.Random(13)
        documents = [json.loads(m.body) for m in good.next(21)]
        documents[10]["id"] = random_text(rng, 10_240)
        feed.publish_raw([json.dumps(d).encode() for d in documents])
        consumer = store.consumer(feed.subscription(), handlers(), fetch_timeout=0.5)
        try:
            wait_until(
                lambda: consumer.run_once() >= 0 and consumer.stats.received >= 21,
                "the 21 messages were handled",
            )
        finally:
            consumer.subscription.close()
        assert store.inbox is not None
        [letter] = store.inbox.dead_letters()
        assert "id is 10,240 characters long" in letter.reason
        assert "at most 256" in letter.reason
        ordinary = [d["id"] for i, d in enumerate(documents) if i != 10]
        assert sorted(processed_ids(store)) == sorted(ordinary)
        assert consumer.stats.applied == 20
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_key_postgresql_cannot_index_is_a_dead_letter_never_an_outage(
    rabbitmq_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Past the reader's own limit (a reader that lets a 10 KB id through), PostgreSQL
    refuses the inbox row (SQLSTATE 54000, index row too large): the consumer buries that
    message and applies its neighbours, instead of pausing as if the server were down."""
    feed = Feed("rabbitmq", rabbitmq_url)
    store = consumer_store("postgresql", tmp_path, request)
    huge = random_text(random.Random(14), 10_240)

    def lenient(body: bytes) -> Any:
        record = from_message(body)
        return replace(record, event_id=huge) if b"POISON" in body else record

    try:
        good = Orders(seed=14)
        documents = [json.loads(m.body) for m in good.next(5)]
        documents[2]["data"]["note"] = "POISON"
        feed.publish_raw([json.dumps(d).encode() for d in documents])
        processor = store.processor(handlers())
        consumer = Consumer(
            processor,
            feed.subscription(),
            lenient,
            inbox=store.inbox,
            in_flight=store.in_flight,
            fetch_timeout=0.5,
        )
        try:
            wait_until(
                lambda: consumer.run_once() >= 0 and consumer.stats.received >= 5,
                "the five messages were handled",
            )
        finally:
            consumer.subscription.close()
        assert consumer.stats.outages == 0
        assert store.inbox is not None
        [letter] = store.inbox.dead_letters()
        assert "54000" in letter.reason
        assert "index row" in letter.reason
        assert len(processed_ids(store)) == 4
    finally:
        store.close()
        feed.cleanup()

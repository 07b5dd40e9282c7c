"""``tidings asyncapi``: the document passes the official AsyncAPI parser and tells the
truth about the wire (subjects, routing keys, the CloudEvents envelope)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import pytest

import tidings
from tests.conftest import IN_CI
from tests.integration.cli import run_cli
from tidings.application.handling import Handlers
from tidings.asyncapi import Broker, document
from tidings.domain.events import DomainEvent
from tidings.examples.shop import inventory
from tidings.examples.shop.es_orders import ORDER_EVENTS, ORDER_UPCASTERS
from tidings.examples.shop.orders import SHOP_EVENTS
from tidings.records import EventRecord
from tidings.serialization.cloudevents import to_message, with_position

TOOL = Path(__file__).resolve().parents[2] / "tools" / "asyncapi"


@pytest.fixture(scope="module")
def validate(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run ``@asyncapi/parser`` on a document: (exit code, what it said)."""
    node = shutil.which("node")
    if node is None or not (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir():
        message = (
            "the AsyncAPI parser is not installed: run `make asyncapi-parser` "
            "(npm ci in tools/asyncapi; needs Node.js and npm)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("asyncapi")

    def run(doc: dict[str, Any]) -> tuple[int, str]:
        path = folder / "doc.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        done = subprocess.run(
            [node, str(TOOL / "validate.mjs"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    return run


def test_the_nats_document_passes_the_official_parser_with_subjects_under_the_prefix(
    validate: Any,
) -> None:
    """Every event type is a channel at ``<prefix>.<type>``, sent by the relay."""
    doc = document(ORDER_EVENTS, Broker("nats://127.0.0.1:4222", subject_prefix="shop"))
    code, said = validate(doc)
    assert code == 0, said
    assert doc["channels"]["orders.placed"]["address"] == "shop.orders.placed"
    assert {op["action"] for op in doc["operations"].values()} == {"send"}
    assert "orders.item_added.v2" in doc["components"]["messages"]


def test_the_rabbitmq_document_names_the_exchange_and_the_consumers_operations(
    validate: Any,
) -> None:
    """Routing keys on the topic exchange; what the handlers take is received; the URL's
    password never reaches the document."""
    url = "amqp://guest:secret-pw@127.0.0.1:5672/shop"
    doc = document(SHOP_EVENTS, Broker(url, exchange="events"), consumes=inventory.handlers())
    code, said = validate(doc)
    assert code == 0, said
    channel = doc["channels"]["OrderPlaced"]
    assert channel["address"] == "OrderPlaced"
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "events"
    assert doc["operations"]["receive.OrderPlaced"]["action"] == "receive"
    assert "inventory.decrease-stock" in doc["operations"]["receive.OrderPlaced"]["summary"]
    assert "receive.OrderCancelled" not in doc["operations"]
    assert "secret-pw" not in json.dumps(doc)


def test_the_parser_refuses_a_document_whose_operation_names_a_missing_message(
    validate: Any,
) -> None:
    """The check can fail: an operation pointing at no message is an error."""
    doc = document(SHOP_EVENTS, Broker("nats://127.0.0.1:4222"))
    del doc["channels"]["OrderPlaced"]["messages"]
    code, said = validate(doc)
    assert code == 1
    assert "error" in said


def test_a_message_on_the_wire_has_the_envelope_the_document_describes() -> None:
    """The relay's CloudEvent carries the envelope's required attributes and no other than
    it names; the payload schema lists the event's fields, without the envelope's."""
    doc = document(ORDER_EVENTS, Broker("nats://127.0.0.1:4222"), source="shop")
    envelope = doc["components"]["schemas"]["CloudEvent"]
    record = EventRecord(
        event_id="e-1",
        stream_id="order-1",
        version=3,
        event_type="orders.placed",
        schema_version=1,
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        data=b'{"total_cents":1200}',
        metadata=with_position(b'{"traceparent":"00-' + b"1" * 32 + b"-" + b"2" * 16 + b'-01"}', 7),
    )
    sent = msgspec.json.decode(to_message(record, "shop").body)
    assert set(envelope["required"]) <= set(sent)
    assert set(sent) <= set(envelope["properties"])
    assert envelope["properties"]["source"] == {"const": "shop"}
    fixed = doc["components"]["messages"]["orders.placed.v1"]["payload"]["allOf"][1]
    data = fixed["properties"]["data"]["$ref"].rsplit("/", 1)[1]
    payload = doc["components"]["schemas"][data]
    assert set(payload["properties"]) == {"total_cents"}
    created = doc["components"]["schemas"]["OrderCreated"]["properties"]
    assert "tidings:pd1:" in json.dumps(created["shipping_address"])


def test_the_command_prints_the_document_and_refuses_an_unknown_broker() -> None:
    """``tidings asyncapi`` prints JSON; a URL that names no broker is a one-line error."""
    done = run_cli(
        *("asyncapi", "--registry", "tidings.examples.shop.orders:SHOP_EVENTS"),
        *(
            "--to",
            "nats://127.0.0.1:4222",
            "--consumes",
            "tidings.examples.shop.inventory:handlers",
        ),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["asyncapi"] == "3.0.0"
    bad = run_cli(
        "asyncapi", "--registry", "tidings.examples.shop.orders:SHOP_EVENTS", "--to", "kafka://x"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "nats://host:4222 or amqp://" in bad.stderr


class LineV1(TypedDict):
    """How version 1 stored a line: the price as a euro string."""

    order_id: str
    sku: str
    price: str


@dataclass(frozen=True, kw_only=True)
class LineAdded(DomainEvent):
    """A line was added (version 3: the price in cents and its currency)."""

    event_type = "test.line_added"
    schema_version = 3

    sku: str
    unit_price_cents: int
    currency: str


def line_v1_to_v2(v1: LineV1) -> dict[str, Any]:
    """Version 1 kept the price as a euro string."""
    return {"sku": v1["sku"], "unit_price_cents": int(float(v1["price"]) * 100)}


def line_v2_to_v3(v2: dict[str, Any]) -> dict[str, Any]:
    """Version 2 had no currency: all prices were euros."""
    return {**v2, "currency": "EUR"}


def test_older_schema_versions_the_upcasters_read_have_messages_that_pass_the_parser(
    validate: Any,
) -> None:
    """One message per schema version the registry still reads: the current one, and each
    older one with its schemaversion const; an older payload has a JSON Schema where its
    upcaster's argument is typed, and says it is upcast on read where it is a plain dict.
    The consumer receives them all; the relay sends only the current version."""
    registry = tidings.EventRegistry(
        [*ORDER_EVENTS, LineAdded],
        upcasters={
            **ORDER_UPCASTERS,
            ("test.line_added", 1): line_v1_to_v2,
            ("test.line_added", 2): line_v2_to_v3,
        },
    )
    handlers = Handlers()
    handlers.add(LineAdded, "billing.count-lines", lambda event, uow: None)
    doc = document(registry, Broker("nats://127.0.0.1:4222"), consumes=handlers)
    code, said = validate(doc)
    assert code == 0, said
    messages = doc["components"]["messages"]
    channel = doc["channels"]["test.line_added"]["messages"]
    assert set(channel) == {"test.line_added.v1", "test.line_added.v2", "test.line_added.v3"}
    for version in (1, 2):
        fixed = messages[f"test.line_added.v{version}"]["payload"]["allOf"][1]["properties"]
        assert fixed["schemaversion"] == {"const": version}
        assert "upcast on read" in messages[f"test.line_added.v{version}"]["description"]
    v1 = messages["test.line_added.v1"]["payload"]["allOf"][1]["properties"]["data"]
    v1_schema = doc["components"]["schemas"][v1["$ref"].rsplit("/", 1)[1]]
    assert set(v1_schema["properties"]) == {"order_id", "sku", "price"}
    v2 = messages["test.line_added.v2"]["payload"]["allOf"][1]["properties"]["data"]
    assert "$ref" not in v2
    assert "upcast on read" in v2["description"]
    received = doc["operations"]["receive.test.line_added"]["messages"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in received] == [
        "test.line_added.v1",
        "test.line_added.v2",
        "test.line_added.v3",
    ]
    sent = doc["operations"]["send.test.line_added"]["messages"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in sent] == ["test.line_added.v3"]
    assert "orders.item_added.v1" in doc["channels"]["orders.item_added"]["messages"]
    assert "orders.item_added.v1" in messages

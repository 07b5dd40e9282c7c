"""An AsyncAPI 3.0 document of what a service publishes and consumes.

One channel per event type: the NATS subject ``<prefix>.<event type>`` the relay publishes
to, or the routing key on the RabbitMQ topic exchange. One message per event type and
schema version, its payload the CloudEvents envelope of ``tidings.serialization.cloudevents``
with ``data`` described by the event class's JSON Schema (``msgspec.json.schema``). A
``send`` operation for every event the registry knows (the relay publishes them) and a
``receive`` operation for every event the handlers take (the consumer handles them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tidings.adapters.brokers import NATS_SCHEMES, RABBITMQ_SCHEMES
from tidings.application.handling import Handlers
from tidings.domain.events import ENVELOPE_FIELDS, DomainEvent
from tidings.errors import ConfigurationError
from tidings.serialization.cloudevents import (
    CONTENT_TYPE,
    MAX_KEY_CHARACTERS,
    POSITION_ATTRIBUTE,
    SPEC_VERSION,
    routing_key,
)
from tidings.serialization.personal import PREFIX as SEALED_PREFIX
from tidings.serialization.personal import personal_fields
from tidings.serialization.registry import EventRegistry

ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/"
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.\-]")  # AsyncAPI keys: letters, digits, '_', '.', '-'
_INT32 = 2**31 - 1


@dataclass(frozen=True)
class Broker:
    """Where the relay publishes: a NATS subject prefix or a RabbitMQ topic exchange."""

    url: str
    subject_prefix: str = "tidings"
    exchange: str = "tidings"
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme.lower()
        if scheme in NATS_SCHEMES:
            object.__setattr__(self, "kind", "nats")
        elif scheme in RABBITMQ_SCHEMES:
            object.__setattr__(self, "kind", "amqp")
        else:
            raise ConfigurationError(
                f"--to {self.url!r}: give the broker the relay publishes to, "
                "nats://host:4222 or amqp://host:5672/"
            )

    def server(self) -> dict[str, Any]:
        """The AsyncAPI server: host and port only (never the URL's user or password)."""
        parts = urlsplit(self.url)
        default_port = 4222 if self.kind == "nats" else 5672
        host = f"{parts.hostname or 'localhost'}:{parts.port or default_port}"
        server: dict[str, Any] = {"host": host, "protocol": parts.scheme.lower()}
        vhost = parts.path.lstrip("/")
        if self.kind == "amqp" and vhost:
            server["pathname"] = "/" + vhost
        return server

    def address(self, event_type: str) -> str:
        """The subject (NATS) or routing key (RabbitMQ) an event of this type travels on."""
        key = routing_key(event_type)
        return f"{self.subject_prefix}.{key}" if self.kind == "nats" else key

    def channel_bindings(self) -> dict[str, Any]:
        """RabbitMQ's exchange (as the publisher declares it); NATS needs none."""
        if self.kind != "amqp":
            return {}
        vhost = urlsplit(self.url).path.lstrip("/") or "/"
        exchange = {"name": self.exchange, "type": "topic", "durable": True, "autoDelete": False}
        exchange["vhost"] = vhost
        return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": "0.3.0"}}


def envelope_schema(source: str | None) -> dict[str, Any]:
    """The CloudEvents 1.0 envelope tidings writes (``to_message``) as a JSON Schema."""
    text = {"type": "string", "minLength": 1}
    key = {**text, "maxLength": MAX_KEY_CHARACTERS}
    version = {"type": "integer", "minimum": 1, "maximum": _INT32}
    properties: dict[str, Any] = {
        "specversion": {"const": SPEC_VERSION},
        "id": {**key, "description": "The event id."},
        "source": {"const": source} if source else {**text, "description": "Bounded context."},
        "type": {**text, "description": "The event type."},
        "subject": {**key, "description": "The aggregate id."},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
        "schemaversion": {**version, "description": "The payload's schema version."},
        "aggregateversion": {**version, "description": "The aggregate's version after it."},
        "traceparent": {**text, "description": "W3C trace context."},
        "tracestate": {"type": "string"},
        "correlationid": text,
        "causationid": text,
        POSITION_ATTRIBUTE: {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The event's position in the source's log (decimal digits).",
        },
        "data": {"description": "The event's payload."},
    }
    required = [
        *("specversion", "id", "source", "type", "subject", "time"),
        *("datacontenttype", "schemaversion", "aggregateversion", "data"),
    ]
    return {
        "type": "object",
        "title": "CloudEvent",
        "description": "A CloudEvents 1.0 document in structured JSON mode.",
        "properties": properties,
        "required": required,
    }


def _key(event_type: str) -> str:
    return _UNSAFE_KEY.sub("_", event_type)


def _payload_schemas(classes: list[type[DomainEvent]]) -> tuple[list[str], dict[str, Any]]:
    """Each class's component name, and the components (the envelope fields dropped:
    they travel as CloudEvents attributes; personal fields travel sealed)."""
    refs, components = msgspec.json.schema_components(classes, ref_template=_SCHEMAS + "{name}")
    names = [ref["$ref"].removeprefix(_SCHEMAS) for ref in refs]
    for cls, name in zip(classes, names, strict=True):
        schema = components[name]
        properties = schema.get("properties", {})
        for envelope_field in ENVELOPE_FIELDS:
            properties.pop(envelope_field, None)
        for personal, subject in personal_fields(cls):
            properties[personal] = {
                "anyOf": [{"type": "string", "pattern": f"^{SEALED_PREFIX}"}, {"type": "null"}],
                "description": f"Personal data of the subject in {subject!r}, sealed with "
                "its key; it reads as [REDACTED] once the subject is forgotten.",
            }
    return names, components


def _summary(cls: type[DomainEvent]) -> str:
    return (cls.__doc__ or cls.__name__).strip().split("\n\n")[0].replace("\n", " ")


def document(
    registry: EventRegistry | Iterable[type[DomainEvent]],
    broker: Broker,
    *,
    consumes: Handlers | None = None,
    title: str = "tidings service",
    version: str = "1.0.0",
    source: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a service: ``registry`` is what its relay publishes,
    ``consumes`` the handlers its consumer runs."""
    published = _classes(registry)
    handled = consumes.event_classes() if consumes else []
    every = list(dict.fromkeys([*published, *handled]))
    if not every:
        raise ConfigurationError(
            "no event classes: --registry names no events and --consumes no handlers"
        )
    names, schemas = _payload_schemas(every)
    schemas["CloudEvent"] = envelope_schema(source)
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for cls, schema_name in zip(every, names, strict=True):
        event_type = cls.type_name()
        channel, message = _key(event_type), f"{_key(event_type)}.v{cls.schema_version}"
        messages[message] = _message(cls, schema_name)
        channels[channel] = {
            "address": broker.address(event_type),
            "title": event_type,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        if broker.channel_bindings():
            channels[channel]["bindings"] = broker.channel_bindings()
        reference = {"$ref": f"#/channels/{channel}/messages/{message}"}
        if cls in published:
            operations[f"send.{channel}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"The relay publishes {event_type} from the outbox.",
                "messages": [reference],
            }
        if consumes and cls in handled:
            names_of = ", ".join(h.name for h in consumes.for_class(cls))
            operations[f"receive.{channel}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"The consumer handles {event_type} (handlers: {names_of}).",
                "messages": [reference],
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Events as CloudEvents 1.0 (structured JSON), published by the "
            "tidings relay from a transactional outbox and handled once through an inbox.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"broker": broker.server()},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _message(cls: type[DomainEvent], schema_name: str) -> dict[str, Any]:
    event_type = cls.type_name()
    fixed = {
        "type": "object",
        "properties": {
            "type": {"const": event_type},
            "schemaversion": {"const": cls.schema_version},
            "data": {"$ref": _SCHEMAS + schema_name},
        },
    }
    return {
        "name": event_type,
        "title": f"{event_type} v{cls.schema_version}",
        "summary": _summary(cls),
        "contentType": CONTENT_TYPE,
        "payload": {"allOf": [{"$ref": _SCHEMAS + "CloudEvent"}, fixed]},
    }


def _classes(found: EventRegistry | Iterable[type[DomainEvent]]) -> list[type[DomainEvent]]:
    """The event classes of a registry (today's names) or of a list of classes."""
    if isinstance(found, EventRegistry):
        return [found.resolve(name, 1) for name in found.names()]
    classes = list(found)
    EventRegistry(classes)  # refuses what is not an event class, saying why
    return classes

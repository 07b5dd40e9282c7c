"""An AsyncAPI 3.0 document of what a service publishes and consumes.

One channel per event type: the NATS subject ``<prefix>.<event type>`` the relay publishes
to, or the routing key on the RabbitMQ topic exchange. One message per event type and
schema version, its payload the CloudEvents envelope of ``tidings.serialization.cloudevents``
with ``data`` described by the event class's JSON Schema (``msgspec.json.schema``). A
``send`` operation for every event the registry knows (the relay publishes them) and a
``receive`` operation for every event the handlers take (the consumer handles them).

Older schema versions that the registry's upcasters still read have a message too, on the
same channel and in the ``receive`` operation: the class describes only today's payload,
so an older one's ``data`` has a JSON Schema only where its upcaster's argument is typed
(a ``TypedDict``, a dataclass, a ``msgspec.Struct``); otherwise its description says that
it is upcast on read.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterable, Mapping
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
from tidings.serialization.registry import EventRegistry, Upcaster

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


@dataclass(frozen=True)
class Older:
    """A schema version of ``cls`` before its own that the registry still reads, through
    ``upcaster`` (and those after it); ``payload`` is the type the upcaster's argument is
    annotated with, when it is one a JSON Schema can be made of."""

    cls: type[DomainEvent]
    version: int
    upcaster: Upcaster
    payload: Any = None


def older_versions(registry: EventRegistry, cls: type[DomainEvent]) -> list[Older]:
    """The versions of ``cls`` before its own from which upcasters lead, step by step, to
    its version: oldest first (a gap in the chain ends it: older records are refused)."""
    found: list[Older] = []
    for version in range(cls.schema_version - 1, 0, -1):
        upcaster = registry.upcaster(cls, version)
        if upcaster is None:
            break
        found.append(Older(cls, version, upcaster, _argument_type(upcaster)))
    return found[::-1]


def _argument_type(upcaster: Upcaster) -> Any:
    """The annotation of the upcaster's argument, unless it is a bare dict or mapping (or
    missing): then nothing is known of the older payload's shape."""
    try:
        first = next(iter(inspect.signature(upcaster).parameters))
        hint = typing.get_type_hints(upcaster).get(first)
    except (TypeError, ValueError, NameError, StopIteration):  # a builtin, or a bad hint
        return None
    if hint is None or hint is Any or hint in (dict, Mapping):
        return None
    if typing.get_origin(hint) in (dict, Mapping):
        return None
    try:
        msgspec.json.schema(hint)
    except (TypeError, ValueError):  # a type msgspec cannot describe
        return None
    return hint


def _payload_schemas(
    classes: list[type[DomainEvent]], older: list[Any]
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Each class's component name, each older payload type's, and the components (the
    envelope fields dropped: they travel as CloudEvents attributes; personal fields
    travel sealed)."""
    refs, components = msgspec.json.schema_components(
        [*classes, *older], ref_template=_SCHEMAS + "{name}"
    )
    every = [ref["$ref"].removeprefix(_SCHEMAS) for ref in refs]
    names, older_names = every[: len(classes)], every[len(classes) :]
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
    return names, older_names, components


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
    older = {
        cls: older_versions(registry, cls) if isinstance(registry, EventRegistry) else []
        for cls in every
    }
    typed = list(dict.fromkeys(o.payload for found in older.values() for o in found if o.payload))
    names, typed_names, schemas = _payload_schemas(every, typed)
    schema_of = dict(zip(typed, typed_names, strict=True))
    schemas["CloudEvent"] = envelope_schema(source)
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for cls, schema_name in zip(every, names, strict=True):
        event_type = cls.type_name()
        channel, message = _key(event_type), f"{_key(event_type)}.v{cls.schema_version}"
        messages[message] = _message(cls, schema_name)
        earlier = [f"{_key(event_type)}.v{o.version}" for o in older[cls]]
        for o, name in zip(older[cls], earlier, strict=True):
            messages[name] = _older_message(o, schema_of.get(o.payload))
        channels[channel] = {
            "address": broker.address(event_type),
            "title": event_type,
            "messages": {
                name: {"$ref": f"#/components/messages/{name}"} for name in (*earlier, message)
            },
        }
        if broker.channel_bindings():
            channels[channel]["bindings"] = broker.channel_bindings()
        reference = {"$ref": f"#/channels/{channel}/messages/{message}"}
        read = [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in earlier]
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
                "messages": [*read, reference],
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


def _older_message(older: Older, schema_name: str | None) -> dict[str, Any]:
    """The message of an older schema version: its ``data`` described where its
    upcaster's argument is typed, said to be upcast on read in any case."""
    cls, version = older.cls, older.version
    event_type = cls.type_name()
    how = getattr(older.upcaster, "__name__", type(older.upcaster).__name__)
    description = (
        f"Schema version {version} of {event_type}, still read: upcast on read to version "
        f"{cls.schema_version} (first by {how}). The relay publishes version "
        f"{cls.schema_version} only; older messages may still be in flight or replayed."
    )
    data: dict[str, Any] = {
        "type": "object",
        "description": f"The version {version} payload; its schema is not known here (its "
        "upcaster takes a plain dict): it is upcast on read.",
    }
    if schema_name:
        data = {"$ref": _SCHEMAS + schema_name}
    fixed = {
        "type": "object",
        "properties": {
            "type": {"const": event_type},
            "schemaversion": {"const": version},
            "data": data,
        },
    }
    return {
        "name": event_type,
        "title": f"{event_type} v{version}",
        "summary": f"{_summary(cls)} (schema version {version}, upcast on read)",
        "description": description,
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

"""``tidings asyncapi``: print the AsyncAPI 3.0 document of what a service publishes and
consumes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tidings.application.handling import Handlers
from tidings.asyncapi import Broker, document
from tidings.cli.loading import broker_options, load
from tidings.errors import ConfigurationError

Options = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="The relay's broker option as name=value: subject_prefix (NATS) or exchange.",
    ),
]


def asyncapi(
    registry: Annotated[
        str,
        typer.Option(
            help="What the relay publishes: an EventRegistry or event classes, as "
            "package.module:attr."
        ),
    ],
    to: Annotated[str, typer.Option(help="The broker: nats://host:4222 or amqp://...")],
    consumes: Annotated[
        str | None, typer.Option(help="What the consumer handles: your Handlers, module:attr.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The bounded context the relay names on the wire.")
    ] = None,
    title: Annotated[str, typer.Option(help="The service's name.")] = "tidings service",
    version: Annotated[str, typer.Option(help="The document's version.")] = "1.0.0",
    option: Options = None,
) -> None:
    """Print an AsyncAPI 3.0 document (JSON): channels, messages with their JSON Schemas
    in the CloudEvents envelope, send and receive operations."""
    typer.echo(json.dumps(build(registry, to, consumes, source, title, version, option), indent=2))


def build(
    registry: str,
    to: str,
    consumes: str | None,
    source: str | None,
    title: str,
    version: str,
    option: list[str] | None,
) -> dict[str, Any]:
    """The document the options describe (the console shows it too)."""
    options = broker_options(option)
    unknown = set(options) - {"subject_prefix", "exchange"}
    if unknown:
        raise ConfigurationError(
            f"--option {', '.join(sorted(unknown))}: the document takes only subject_prefix "
            "(NATS) and exchange (RabbitMQ)"
        )
    broker = Broker(to, **{k: str(v) for k, v in options.items()})
    handlers = load(consumes, "--consumes") if consumes else None
    if handlers is not None and not isinstance(handlers, Handlers):
        raise ConfigurationError(f"--consumes {consumes!r} is not a tidings Handlers registry")
    events = load(registry, "--registry")
    if not isinstance(events, list | tuple | set | frozenset) and not hasattr(events, "names"):
        raise ConfigurationError(
            f"--registry {registry!r} is neither an EventRegistry nor a list of event classes"
        )
    return document(events, broker, consumes=handlers, title=title, version=version, source=source)

"""``tidings console``: serve the local web view over a database's tables."""

from __future__ import annotations

import getpass
import ipaddress
import logging
from contextlib import ExitStack
from typing import Annotated

import typer

import tidings
from tidings.adapters.extras import require
from tidings.application.handling import Handlers
from tidings.cli import asyncapi
from tidings.cli.loading import load
from tidings.cli.options import Db, Prefix, Schema, open_store
from tidings.cli.projections import load_projections
from tidings.cli.sagas import load_definitions
from tidings.cli.trace import check_exists
from tidings.errors import ConfigurationError
from tidings.serialization.registry import EventRegistry

TOKEN_ENV = "TIDINGS_CONSOLE_TOKEN"  # noqa: S105 - the variable's name, not a token


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def decoding(registry: str | None, handlers: Handlers | None) -> EventRegistry:
    """The registry the console reads events with: ``--registry`` when it is an
    EventRegistry (its upcasters and renames read events stored at older versions), with
    the classes ``--handlers`` takes; ``--aggregates`` add theirs when the store opens."""
    given = load(registry, "--registry") if registry else None
    events = given if isinstance(given, EventRegistry) else EventRegistry()
    if handlers is not None:
        events.register(*handlers.event_classes())
    return events


def console(
    db: Db,
    host: Annotated[
        str, typer.Option(help="Address to bind; another than 127.0.0.1 needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV, help=f"Access token every request must carry (or {TOKEN_ENV})."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who acts (default: the OS user).")] = None,
    definitions: Annotated[
        str | None,
        typer.Option(help="Your saga definitions, module:attr (to retry or compensate)."),
    ] = None,
    handlers: Annotated[
        str | None,
        typer.Option(help="Your Handlers, module:attr (to retry inbox dead letters)."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            help="What the relay publishes, module:attr, for the AsyncAPI page; an "
            "EventRegistry's upcasters and renames also read older events."
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="The relay's broker URL, for the AsyncAPI page.")
    ] = None,
    projections: Annotated[
        str | None,
        typer.Option(help="Your Projection (or a list of them), module:attr (to rebuild)."),
    ] = None,
    aggregates: Annotated[
        str | None,
        typer.Option(
            help="Your event-sourced aggregate class (or a list of them), module:attr "
            "(to show a stream's state at a time)."
        ),
    ] = None,
    inbox_db: Annotated[
        list[str] | None,
        typer.Option(
            "--inbox-db",
            help="Another service's database, where the event lookup follows an event "
            "(repeat for each; as for tidings trace).",
        ),
    ] = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Serve the console: outbox, inbox, sagas and projections, to look at and operate."""
    require("console", "tidings console")
    if not loopback(host) and not token:
        raise ConfigurationError(
            f"--host {host} opens the console to other machines: give it a token with "
            f"--token or {TOKEN_ENV}, or keep the default --host 127.0.0.1"
        )
    import uvicorn

    from tidings.console import states
    from tidings.console.app import create_app
    from tidings.console.context import Console
    from tidings.console.security import Guard

    found = load(handlers, "--handlers") if handlers else None
    known = load_definitions(definitions, needed=False)
    if to and not registry:
        raise ConfigurationError("the AsyncAPI page needs --registry with --to")
    document = None
    if registry and to:
        document = asyncapi.build(registry, to, handlers, None, "tidings service", "1.0.0", None)
    events = decoding(registry, found)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    who = f"{by or getpass.getuser()} (console)"
    code = load_projections(projections) if projections else []
    kinds = states.check(load(aggregates, "--aggregates"), aggregates) if aggregates else []
    for url in inbox_db or ():
        check_exists(url)
    with ExitStack() as stack:
        store = stack.enter_context(open_store(db, prefix, schema, outbox=True, registry=events))
        others = [
            stack.enter_context(
                tidings.connect(url, prefix=prefix, schema=schema, create_schema=False)
            )
            for url in dict.fromkeys(inbox_db or ())
        ]
        guard = Guard(token)  # the Console makes the repositories: a clash of names shows now
        app = create_app(Console(store, guard, who, known, found, document, code, others, kinds))
        typer.echo(f"tidings console on http://{host}:{port}/ over {store.database.describe()}")
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

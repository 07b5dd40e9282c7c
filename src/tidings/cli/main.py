"""``tidings``: run the demo, print the schema; later, the relay and the consumers."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from tidings import __version__
from tidings.cli import workers
from tidings.cli.asyncapi import asyncapi
from tidings.cli.console import console
from tidings.cli.events import app as events_app
from tidings.cli.inbox import app as inbox_app
from tidings.cli.options import Db, Prefix, Schema, open_store
from tidings.cli.outbox import app as outbox_app
from tidings.cli.projections import app as projections_app
from tidings.cli.sagas import app as sagas_app
from tidings.cli.status import status as status_command
from tidings.cli.trace import trace
from tidings.errors import TidingsError

app = typer.Typer(
    help="tidings: domain events that are never lost, never phantom, never applied twice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(outbox_app, name="outbox")
app.add_typer(sagas_app, name="sagas")
app.add_typer(inbox_app, name="inbox")
app.add_typer(projections_app, name="projections")
app.command()(workers.relay)
app.command()(workers.consume)
app.add_typer(events_app, name="events")
app.command("status")(status_command)
app.command()(asyncapi)
app.command()(console)
app.command()(trace)


class Dialect(enum.StrEnum):
    """SQL dialects tidings can print its schema for."""

    sqlite = "sqlite"
    postgresql = "postgresql"


@app.command()
def demo(
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file to create (must not exist); a new temporary file if unset."),
    ] = None,
) -> None:
    """Play the shop example on an embedded SQLite file and tell what happens, in order."""
    from tidings.cli.demo import run_demo

    run_demo(db)


@app.command()
def schema(
    dialect: Annotated[Dialect, typer.Option(help="Which database's DDL to print.")],
    prefix: Annotated[str, typer.Option(help="Prefix of every table name.")] = "tidings_",
    pg_schema: Annotated[
        str, typer.Option("--schema", help="PostgreSQL schema that holds the tables.")
    ] = "public",
) -> None:
    """Print the DDL tidings runs, for teams that apply their own migrations."""
    if dialect is Dialect.sqlite:
        from tidings.adapters.sqlite.database import sqlite_schema

        typer.echo(sqlite_schema(prefix))
    else:
        from tidings.adapters.sql import postgres_schema

        typer.echo(postgres_schema(pg_schema, prefix))


@app.command()
def forget(
    subject: Annotated[str, typer.Argument(help="The subject's id (a customer id, say).")],
    db: Db,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Forget a subject: delete its key, so its personal data reads as [REDACTED] for good."""
    question = f"Forget {subject!r} for good? Their personal data can never be read again"
    if not yes and not typer.confirm(question):
        raise typer.Abort
    with open_store(db, prefix, schema) as store:
        gone = store.forget(subject)
    if gone:
        typer.echo(f"forgot {subject!r}: its key is deleted; its personal data reads as [REDACTED]")
    else:
        typer.echo(f"{subject!r} has no key here: nothing of theirs is sealed in this store")


@app.command()
def version() -> None:
    """Print the installed tidings version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: run the app, turning tidings errors into a message and exit code 2."""
    try:
        app()
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None

"""``tidings events``: copy an event log through a transformation into a new store."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import tidings
from tidings.application.migration import Transform, migrate
from tidings.errors import ConfigurationError

app = typer.Typer(help="Work on the event log as a whole.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


@app.command("migrate")
def migrate_command(
    source: Annotated[str, typer.Option("--from", help="URL of the store to copy from.")],
    target: Annotated[str, typer.Option("--to", help="URL of the new, empty store.")],
    transform: Annotated[
        str | None,
        typer.Option(help="module:function turning each EventRecord into the one to write."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Records per transaction in the target.")] = 1000,
    prefix: Annotated[str, typer.Option(help="Table prefix of both stores.")] = "tidings_",
    schema: Annotated[str, typer.Option("--schema", help="PostgreSQL schema of both.")] = "public",
) -> None:
    """Copy every event into a new store, never in place; check the copy at the end.

    The source is only read (its tables are never created or changed); the target's
    tables are created if missing, and it must hold no events yet.
    """
    function = load_transform(transform) if transform else None
    with (
        tidings.connect(source, prefix=prefix, schema=schema, create_schema=False) as old,
        tidings.connect(target, prefix=prefix, schema=schema) as new,
        Progress(
            TextColumn("copying events"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task("copy", total=old.events.count())
        report = migrate(
            old,
            new,
            function,
            batch=batch,
            progress=lambda read, _written: bar.update(task, completed=read),
        )
    console.print(
        f"copied {report.written} of {report.read} events ({report.dropped} dropped, "
        f"{report.renumbered_streams} streams renumbered) and {report.keys} subject keys; "
        "the target's log was read back and matches"
    )


def load_transform(spec: str) -> Transform:
    """The function named ``module:function`` (the current folder is importable)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigurationError(
            f"--transform {spec!r} is not module:function (say, my_migrations:cents_to_euros)"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --transform: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigurationError(f"{module_name} has no function {name!r} for --transform")
    return cast("Transform", function)

"""``tidings trace EVENT_ID``: where one event is, across the databases of its services."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import tidings
from tidings.cli.options import Prefix, Schema
from tidings.errors import ConfigurationError
from tidings.observability.trail import Handled, Trail, check_event_id, follow

console = Console(highlight=False, soft_wrap=True)

Dbs = Annotated[
    list[str],
    typer.Option(
        "--db",
        help="Database URL; give --db again for each service's database (the consumers').",
    ),
]


def trace(
    event_id: Annotated[str, typer.Argument(help="The event's id (a log line's event_id).")],
    db: Dbs,
    inbox_db: Annotated[
        list[str] | None,
        typer.Option("--inbox-db", help="A consumer's database, as another --db."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Where one event is: written (stream, position, time), its outbox row (published
    when, attempts, dead letter), and which handlers processed it, when, after how many
    attempts. Only reads: no table is created or changed."""
    check_event_id(event_id)
    urls = list(dict.fromkeys([*db, *(inbox_db or [])]))
    for url in urls:
        check_exists(url)
    trails = []
    for url in urls:
        with tidings.connect(url, prefix=prefix, schema=schema, create_schema=False) as store:
            trails.append(follow(store, event_id))
    if as_json:
        typer.echo(json.dumps({"event_id": event_id, "databases": [asdict(t) for t in trails]}))
    else:
        for trail in trails:
            for line in describe(trail):
                console.print(line, markup=False)
    if not any(t.found for t in trails):
        where = ", ".join(t.database for t in trails)
        console.print(
            f"event {event_id} is in none of these databases ({where}): check the id, and "
            "give every service's database with --db (published outbox rows and processed "
            "inbox rows are deleted after their retention)",
            markup=False,
        )
        raise typer.Exit(1)


def check_exists(url: str) -> None:
    """A SQLite file that is not there is a typo, not an empty database: say so rather
    than create it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.exists():
            raise ConfigurationError(f"--db {url}: there is no file {path}; check the path")


def describe(trail: Trail) -> list[str]:
    """The lines ``tidings trace`` prints for one database."""
    lines = [f"{trail.database}:"]
    if trail.missing:
        lines.append(f"  no tidings tables of {', '.join(trail.missing)} here")
    w = trail.written
    if w is not None:
        lines.append(
            f"  written: {w.event_type} to stream {w.stream_id} version {w.version}, "
            f"position {w.position}, at {w.recorded_at} (occurred {w.occurred_at})"
        )
        if w.correlation_id or w.traceparent:
            lines.append(f"  conversation {w.correlation_id}, traceparent {w.traceparent}")
    o = trail.outbox
    if o is not None:
        if o.dead_at is not None:
            state = f"dead letter since {o.dead_at} after {o.attempts} attempts: {o.last_error}"
        elif o.published:
            state = f"published at {o.published_at}"
            state += f" after {o.attempts} refusals" if o.attempts else ""
        else:
            state = f"not published yet, {o.attempts} attempts"
            state += f", last error: {o.last_error}" if o.last_error else ""
        lines.append(f"  outbox: {state}")
    lines.extend(f"  handler {h.handler}: {_handled(h)}" for h in trail.handled)
    if not trail.found:
        lines.append("  nothing of this event")
    return lines


def _handled(h: Handled) -> str:
    attempts = f"after {h.attempts} attempt{'s' if h.attempts != 1 else ''}"
    if h.status == "processed":
        return f"processed at {h.at} {attempts}"
    if h.status == "dead":
        return f"dead letter since {h.at} {attempts}: {h.error}"
    return f"{h.status} {attempts}" + (f", last error: {h.error}" if h.error else "")

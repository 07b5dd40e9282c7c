"""Options the commands share: which database, which tables."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import typer

import tidings
from tidings.backends import OutboxAdapter
from tidings.errors import ConfigurationError

T = TypeVar("T")

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="TIDINGS_DB",
        help="Database URL: sqlite:///file.db or postgresql://user@host/dbname.",
    ),
]
Prefix = Annotated[str, typer.Option(help="Prefix of every table name.")]


class LogFormat(enum.StrEnum):
    """How a worker writes its log: plain lines, or one JSON object a line."""

    text = "text"
    json = "json"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="text, or json: one JSON object a line (event id, handler, trace id...).",
    ),
]
Schema = Annotated[str, typer.Option("--schema", help="PostgreSQL schema of the tables.")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve /metrics, /healthz and /readyz on this port (the metrics extra).",
    ),
]


def open_store(db: str, prefix: str, schema: str, **options: Any) -> tidings.Store:
    """Connect to the tables a command works on (creating them if missing)."""
    return tidings.connect(db, prefix=prefix, schema=schema, **options)


def outbox_of(store: tidings.Store) -> OutboxAdapter:
    """The store's outbox (it was opened with ``outbox=True``)."""
    if store.outbox is None:
        raise ConfigurationError("this store was opened without an outbox")
    return store.outbox


def chosen(ids: Sequence[T] | None, all_: bool, what: str) -> list[T] | None:
    """Which dead letters a command works on: the given ``ids``, or all (None)."""
    if all_ and ids:
        raise ConfigurationError(f"give {what} or --all, not both")
    if not all_ and not ids:
        raise ConfigurationError(f"say which dead letters: {what}, or --all")
    return None if all_ else list(ids or ())


def confirm_purge(ids: Sequence[object] | None, yes: bool, consequence: str) -> None:
    """Ask before deleting dead letters for good, unless ``--yes``."""
    what = "every dead letter" if ids is None else f"{len(ids)} dead letter(s)"
    if not yes and not typer.confirm(f"Delete {what} for good? {consequence}"):
        raise typer.Abort

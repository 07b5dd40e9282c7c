"""Options the commands share: which database, which tables."""

from __future__ import annotations

from typing import Annotated, Any

import typer

import tidings
from tidings.backends import OutboxAdapter
from tidings.errors import ConfigurationError

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="TIDINGS_DB",
        help="Database URL: sqlite:///file.db or postgresql://user@host/dbname.",
    ),
]
Prefix = Annotated[str, typer.Option(help="Prefix of every table name.")]
Schema = Annotated[str, typer.Option("--schema", help="PostgreSQL schema of the tables.")]


def open_store(db: str, prefix: str, schema: str, **options: Any) -> tidings.Store:
    """Connect to the tables a command works on (creating them if missing)."""
    return tidings.connect(db, prefix=prefix, schema=schema, **options)


def outbox_of(store: tidings.Store) -> OutboxAdapter:
    """The store's outbox (it was opened with ``outbox=True``)."""
    if store.outbox is None:
        raise ConfigurationError("this store was opened without an outbox")
    return store.outbox

"""``tidings inbox``: the messages no handler could take, and what to do with them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

import tidings
from tidings.application.handling import Handlers
from tidings.cli.loading import load
from tidings.cli.options import Db, Prefix, Schema, chosen, confirm_purge, open_store
from tidings.serialization.cloudevents import from_message
from tidings.serialization.registry import EventRegistry

app = typer.Typer(help="Operate the inbox's dead letters.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)

Ids = Annotated[list[int] | None, typer.Argument(help="Dead letter ids (or use --all).")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


@app.command("dead-letters")
def dead_letters(
    db: Db, prefix: Prefix = "tidings_", schema: Schema = "public", limit: int = 100
) -> None:
    """List the messages no handler could take, with the reason."""
    with open_store(db, prefix, schema) as store:
        letters = store.inbox.dead_letters(limit) if store.inbox else []
    if not letters:
        console.print("no dead letters")
    for letter in letters:
        console.print(
            f"#{letter.id}  handler {letter.handler}  event {letter.event_id or '-'} "
            f"({letter.event_type or 'unreadable'}), {letter.attempts} attempt(s), "
            f"dead since {letter.dead_at}: {letter.reason}",
            markup=False,
        )


@app.command()
def retry(
    db: Db,
    handlers: Annotated[str, typer.Option(help="Your Handlers as package.module:attr.")],
    ids: Ids = None,
    all_: All = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Handle dead letters again (after a fix); one that fails again stays a dead letter."""
    picked = chosen(ids, all_, "their ids")
    registry: Handlers = load(handlers, "--handlers")
    events = EventRegistry(registry.event_classes())
    with open_store(db, prefix, schema, registry=events) as store:
        console.print(retry_dead(store, registry, picked))


@app.command()
def purge(
    db: Db,
    ids: Ids = None,
    all_: All = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Delete dead letters for good."""
    picked = chosen(ids, all_, "their ids")
    confirm_purge(picked, yes, "They will never be handled")
    with open_store(db, prefix, schema) as store:
        gone = purge_dead(store, picked)
    console.print(f"{gone} dead letter(s) deleted")


def purge_dead(store: tidings.Store, ids: list[int] | None) -> int:
    """Delete inbox dead letters (all when ``ids`` is None); how many went."""
    if store.inbox is None:
        return 0
    with store.database.transaction() as tx:
        return len(store.inbox.remove_dead(tx, ids))


def retry_dead(store: tidings.Store, handlers: Handlers, ids: list[int] | None) -> str:
    """Handle dead letters again with ``handlers`` (the store knows their events); says
    how many were handled."""
    verdicts = store.processor(handlers).retry_dead(from_message, ids)
    done = sum(1 for v in verdicts if v.ack and not v.buried)
    return f"{done} of {len(verdicts)} dead letter(s) handled; the rest are kept"

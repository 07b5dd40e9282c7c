"""``tidings outbox``: look at the backlog and operate the dead letters."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from tidings.cli.options import Db, Prefix, Schema, chosen, confirm_purge, open_store, outbox_of

app = typer.Typer(help="Look at the outbox and operate its dead letters.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)

Ids = Annotated[list[str] | None, typer.Argument(help="Event ids (or use --all).")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


@app.command()
def status(db: Db, prefix: Prefix = "tidings_", schema: Schema = "public") -> None:
    """Backlog, age of the oldest unpublished event, dead letters."""
    with open_store(db, prefix, schema, outbox=True) as store:
        stats = outbox_of(store).stats(time.time())
    console.print(
        f"backlog {stats.backlog} event(s), oldest {stats.oldest_age_seconds:.1f} s old, "
        f"{stats.dead_letters} dead letter(s)"
    )


@app.command("dead-letters")
def dead_letters(
    db: Db, prefix: Prefix = "tidings_", schema: Schema = "public", limit: int = 100
) -> None:
    """List the events the relay gave up on (their aggregates wait behind them)."""
    with open_store(db, prefix, schema, outbox=True) as store:
        letters = outbox_of(store).dead_letters(limit)
    if not letters:
        console.print("no dead letters")
        return
    for letter in letters:
        r = letter.record
        console.print(
            f"{r.event_id}  {r.event_type} of {r.stream_id} v{r.version}  "
            f"{letter.attempts} attempt(s), dead since {letter.dead_at}: {letter.error}",
            markup=False,
        )


@app.command()
def retry(
    db: Db,
    ids: Ids = None,
    all_: All = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Put dead letters back in the outbox; the relay publishes them first, in order."""
    picked = chosen(ids, all_, "event ids")
    with open_store(db, prefix, schema, outbox=True) as store:
        moved = outbox_of(store).retry_dead(picked)
    console.print(f"{moved} dead letter(s) back in the outbox")


@app.command()
def purge(
    db: Db,
    ids: Ids = None,
    all_: All = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Delete dead letters for good; their aggregates' later events flow again."""
    picked = chosen(ids, all_, "event ids")
    confirm_purge(picked, yes, "They will never be published")
    with open_store(db, prefix, schema, outbox=True) as store:
        gone = outbox_of(store).purge_dead(picked)
    console.print(f"{gone} dead letter(s) deleted")

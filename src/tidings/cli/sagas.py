"""``tidings sagas``: the intervention queue, saga timelines, and operator actions.

Every operator action is recorded on the saga's history with who (``--by``, else the OS
user) and why. Actions that run steps (retry, compensate, recover) need the saga
definitions: ``--definitions module:attribute`` names a definition or a list of them.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from tidings.cli.loading import load
from tidings.cli.options import Db, Prefix, Schema, open_store
from tidings.domain.saga import SagaDefinition
from tidings.errors import ConfigurationError

app = typer.Typer(help="Look at sagas and operate the intervention queue.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)

Definitions = Annotated[
    str | None,
    typer.Option(help="module:attribute of your saga definition(s), to run their steps."),
]
By = Annotated[str | None, typer.Option("--by", help="Who acts (default: the OS user).")]
Why = Annotated[str, typer.Option("--note", help="Why: kept on the saga's history.")]


def _definitions(path: str | None, needed: bool) -> list[SagaDefinition]:
    if path is None:
        if needed:
            raise ConfigurationError(
                "this action runs saga steps: name your definitions with"
                " --definitions package.module:attribute"
            )
        return []
    found: Any = load(path, "--definitions")
    found = [found] if isinstance(found, SagaDefinition) else list(found)
    if not all(isinstance(d, SagaDefinition) for d in found):
        raise ConfigurationError(f"{path} must be a SagaDefinition or a list of them")
    return list(found)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


@app.command("list")
def list_(
    db: Db,
    state: Annotated[
        str | None, typer.Option(help="Only sagas in this state, e.g. needs-intervention.")
    ] = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
    limit: int = 100,
) -> None:
    """List sagas: id, type, state, steps done and compensated, last error."""
    wanted = state.upper().replace("-", "_") if state else None
    with open_store(db, prefix, schema) as store:
        found = store.sagas().listing(wanted, limit)
    if not found:
        console.print("no sagas" + (f" in state {wanted}" if wanted else ""))
    for s in found:
        console.print(
            f"{s.saga_id}  {s.state}  done {s.executed_steps}  compensated {s.compensated}"
            + (f"  last error: {s.error}" if s.error else ""),
            markup=False,
        )


@app.command()
def show(db: Db, saga_id: str, prefix: Prefix = "tidings_", schema: Schema = "public") -> None:
    """A saga's state and the timeline of every transition, with times and errors."""
    with open_store(db, prefix, schema) as store:
        sagas = store.sagas()
        result = sagas.get(saga_id)
        if result is None:
            raise ConfigurationError(f"no saga has id {saga_id!r}: see tidings sagas list")
        history = sagas.history(saga_id)
    console.print(f"saga {saga_id}: {result.state}", markup=False)
    for t in history:
        extra = "".join(
            [
                f" {t.step}" if t.step else "",
                f" by {t.by}" if t.by else "",
                f" amount {t.amount:g}" if t.kind == "discrepancy" else "",
                f": {t.detail}" if t.detail else "",
            ]
        )
        console.print(f"  {_when(t.at)}  {t.kind}{extra}", markup=False)


def _operate(
    db: str,
    prefix: str,
    schema: str,
    saga_id: str,
    action: str,
    by: str | None,
    why: str,
    definitions: str | None,
) -> None:
    needed = action != "resolve"
    with open_store(db, prefix, schema) as store:
        sagas = store.sagas(_definitions(definitions, needed))
        result = sagas.operate(saga_id, action, by or getpass.getuser(), why)
    console.print(f"saga {saga_id}: {result.state}", markup=False)


@app.command()
def retry(
    db: Db,
    saga_id: str,
    definitions: Definitions = None,
    note: Why = "",
    by: By = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Try a saga's failed compensation again (it waits in NEEDS_INTERVENTION)."""
    _operate(db, prefix, schema, saga_id, "retry", by, note, definitions)


@app.command()
def compensate(
    db: Db,
    saga_id: str,
    definitions: Definitions = None,
    note: Why = "",
    by: By = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Force compensation of the steps that succeeded, last first."""
    _operate(db, prefix, schema, saga_id, "compensate", by, note, definitions)


@app.command()
def resolve(
    db: Db,
    saga_id: str,
    note: Annotated[str, typer.Option("--note", help="What was done by hand.")],
    by: By = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Mark a saga handled by hand: it ends RESOLVED, with the note on its history."""
    _operate(db, prefix, schema, saga_id, "resolve", by, note, None)


@app.command()
def recover(
    db: Db,
    definitions: Definitions = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Drive every due saga: timers that fired, steps whose owner's lease ran out."""
    with open_store(db, prefix, schema) as store:
        sagas = store.sagas(_definitions(definitions, True))
        moved = total = sagas.run_once()
        while moved:
            moved = sagas.run_once()
            total += moved
    console.print(f"{total} saga transition(s) made")

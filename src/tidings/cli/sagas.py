"""``tidings sagas``: the intervention queue, saga timelines, and operator actions.

Every operator action is recorded on the saga's history with who (``--by``, else the OS
user) and why. Actions that run steps (retry, compensate, recover) need the saga
definitions: ``--definitions module:attribute`` names a definition or a list of them.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from tidings.cli.loading import load
from tidings.cli.options import (
    Db,
    LogFormat,
    LogFormatOption,
    MetricsPort,
    Prefix,
    Schema,
    open_store,
)
from tidings.cli.progress import Rate, reporting, say, stop_on_signals
from tidings.domain.saga import SagaDefinition
from tidings.domain.saga_state import ACTIVE, SagaResult
from tidings.domain.saga_versions import SagaUpcaster
from tidings.errors import ConfigurationError
from tidings.observability.logs import configure as configure_logs
from tidings.observability.readiness import flowing
from tidings.observability.serving import metrics_available, observed
from tidings.workers.sagas import SagaWorker

app = typer.Typer(help="Look at sagas and operate the intervention queue.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)

Definitions = Annotated[
    str | None,
    typer.Option(help="module:attribute of your saga definition(s), to run their steps."),
]
By = Annotated[str | None, typer.Option("--by", help="Who acts (default: the OS user).")]
Why = Annotated[str, typer.Option("--note", help="Why: kept on the saga's history.")]


def load_definitions(path: str | None, needed: bool) -> list[SagaDefinition | SagaUpcaster]:
    """The definitions ``path`` names (none if unset); ``needed``: refuse an unset path."""
    if path is None:
        if needed:
            raise ConfigurationError(
                "this action runs saga steps: name your definitions with"
                " --definitions package.module:attribute"
            )
        return []
    found: Any = load(path, "--definitions")
    kinds = (SagaDefinition, SagaUpcaster)
    found = [found] if isinstance(found, kinds) else found
    if not isinstance(found, list | tuple) or not all(isinstance(d, kinds) for d in found):
        raise ConfigurationError(
            f"{path} must be a SagaDefinition or a list of SagaDefinitions (every version"
            " still running) and SagaUpcasters"
        )
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
            f"{s.saga_id}  {s.saga_type} v{s.definition_version}  {s.state}"
            f"  done {s.executed_steps}  compensated {s.compensated}"
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
    console.print(
        f"saga {saga_id} ({result.saga_type} v{result.definition_version}): {result.state}",
        markup=False,
    )
    if result.state in ACTIVE:
        for line in _waits(result):
            console.print(f"  {line}", markup=False)
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


def _waits(result: SagaResult) -> list[str]:
    """What an active saga waits for: a remote step's reply, its deadlines, its timer."""
    lines = []
    if result.waiting:
        step, _, phase = result.waiting.partition(":")
        until = f" until {_when(result.step_deadline_at)}" if result.step_deadline_at else ""
        lines.append(f"waiting for the reply to {step} ({phase}){until}")
    elif result.wake_at:
        lines.append(f"next move at {_when(result.wake_at)}")
    if result.deadline_at:
        lines.append(f"saga deadline {_when(result.deadline_at)}")
    return lines


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
        sagas = store.sagas(load_definitions(definitions, needed))
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
        sagas = store.sagas(load_definitions(definitions, True))
        moved = total = sagas.run_once()
        while moved:
            moved = sagas.run_once()
            total += moved
    console.print(f"{total} saga transition(s) made")
    for saga_id, why in sagas.refused.items():
        console.print(f"refused {saga_id}: {why}", markup=False)
    if sagas.refused:
        raise typer.Exit(1)


@app.command()
def run(
    db: Db,
    definitions: Annotated[
        str,
        typer.Option(help="module:attribute of your saga definitions (and upcasters)."),
    ],
    interval: Annotated[
        float, typer.Option(help="Longest sleep between passes, in seconds.")
    ] = 1.0,
    batch: Annotated[int, typer.Option(help="Sagas driven per pass, at most.")] = 100,
    lease: Annotated[
        float, typer.Option(help="Seconds a step may run before another worker takes it.")
    ] = 30.0,
    by: Annotated[
        str | None,
        typer.Option("--by", help="The worker's name on the transitions it makes."),
    ] = None,
    every: Annotated[
        float, typer.Option(help="Seconds between progress lines off a terminal.")
    ] = 10.0,
    metrics_port: MetricsPort = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Drive due sagas (fired timers, interrupted steps) until SIGTERM or SIGINT."""
    configure_logs(log_format)
    metrics_available(metrics_port)
    known = load_definitions(definitions, True)
    if interval <= 0 or batch < 1:
        raise ConfigurationError(
            f"--interval {interval} --batch {batch}: give an interval above 0 seconds and a"
            " batch of at least 1"
        )
    stop = stop_on_signals()
    with open_store(db, prefix, schema) as store:
        worker = SagaWorker(store, known, interval=interval, batch=batch, lease=lease, by=by)
        say(f"saga worker {worker.worker_id}: {store.database.describe()}")
        with (
            observed(
                store,
                kind="saga worker",
                name=definitions,
                worker_id=worker.worker_id,
                port=metrics_port,
                checks=[flowing(worker.stats)],
                saga_worker=worker,
            ),
            reporting(worker_status(worker), every),
        ):
            worker.run(stop)


def worker_status(worker: SagaWorker) -> Callable[[], str]:
    """A function that describes the saga worker's progress now."""
    rate = Rate()

    def status() -> str:
        s = worker.stats
        try:
            counts = worker.sagas.counts()
            states = (
                f"running {counts.get('RUNNING', 0)}, compensating"
                f" {counts.get('COMPENSATING', 0)}, needs intervention"
                f" {counts.get('NEEDS_INTERVENTION', 0)}"
            )
        except Exception as exc:  # the database may be down: say so, keep reporting
            states = f"states unknown ({type(exc).__name__})"
        due = "no timer" if s.next_wake is None else f"next due in {_until(s.next_wake)}"
        return (
            f"sagas {states}; transitions {s.transitions} ({rate(s.transitions):.0f}/s),"
            f" {due}, refused {len(worker.refused)}, outages {s.outages}"
        )

    def _until(at: float) -> str:
        return f"{max(0.0, at - worker.clock()):.1f} s"

    return status

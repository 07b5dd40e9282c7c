"""``tidings projections``: run projections, show their lag, pause and resume them.

``run``, ``rebuild``, ``rollback`` and ``drop-old`` need the projections
(``--projections module:attribute``, a Projection or a list of them); ``status``,
``pause``, ``retry``, ``skip`` and ``reset`` read and change only the checkpoints, so they need
nothing but the database.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console

from tidings.application.projections import Projection, ProjectionRunner, Rebuild, VerifyError
from tidings.application.projections.runner import resumes
from tidings.application.projections.waiting import STREAM
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
from tidings.cli.progress import console as progress
from tidings.domain.projection_state import PAUSED
from tidings.errors import ConfigurationError, ProjectionError
from tidings.observability.logs import configure as configure_logs
from tidings.observability.serving import metrics_available, observed

app = typer.Typer(help="Run projections and operate them: status, retry, skip, rebuild.")
console = Console(highlight=False, soft_wrap=True)

Name = Annotated[str, typer.Argument(help="The projection's name.")]


def load_projections(path: str) -> list[Projection]:
    """The Projection (or list of them) ``path`` (module:attr) names."""
    found: Any = load(path, "--projections")
    if isinstance(found, Projection):
        found = [found]
    if not isinstance(found, list | tuple) or not found:
        found = [None]
    if not all(isinstance(p, Projection) for p in found):
        raise ConfigurationError(f"--projections {path} must be a Projection or a list of them")
    return list(found)


@contextmanager
def _runner(db: str, prefix: str, schema: str) -> Iterator[ProjectionRunner]:
    """A runner of no projections on ``db``: for the commands that read or mend
    checkpoints; closed with its store."""
    with open_store(db, prefix, schema) as store:
        runner = store.projections()
        try:
            yield runner
        finally:
            runner.close()


@app.command()
def run(
    db: Db,
    projections: Annotated[
        str, typer.Option(help="Your Projection (or a list of them) as package.module:attr.")
    ],
    registry: Annotated[
        str | None,
        typer.Option(help="Your EventRegistry as module:attr (default: the handlers' events)."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Events per transaction.")] = 500,
    poll: Annotated[float, typer.Option(help="Seconds between looks without a signal.")] = 1.0,
    every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 10.0,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="Run as one of several workers sharing each projection's P parts (the "
            "same P for every worker; start this command once per worker)."
        ),
    ] = None,
    ttl: Annotated[
        float, typer.Option(help="Seconds a dead worker's parts wait before a takeover.")
    ] = 15.0,
    metrics_port: MetricsPort = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Catch the projections up, then follow the log until SIGTERM or SIGINT."""
    configure_logs(log_format)
    metrics_available(metrics_port)
    chosen = load_projections(projections)
    events = load(registry, "--registry") if registry else None
    stop = stop_on_signals()
    with open_store(db, prefix, schema, registry=events) as store:
        options: dict[str, Any] = {"batch": batch, "poll": poll}
        if partitions is not None:
            options.update(partitions=partitions, ttl=ttl)
        runner = store.projections(chosen, **options)
        try:
            say(f"projections {', '.join(runner.names)}: {store.database.describe()}")
            with (
                observed(
                    store,
                    kind="projections",
                    name=", ".join(runner.names),
                    worker_id=runner.runner_id,
                    port=metrics_port,
                    projections=runner,
                ),
                reporting(_progress(runner), every),
            ):
                runner.run(stop)
        finally:
            runner.close()


def _progress(runner: ProjectionRunner) -> Any:
    rate = Rate()

    def line() -> str:
        try:
            figures = ", ".join(
                f"{s.name} {s.state} lag {s.lag_events}/{s.lag_seconds:.1f} s"
                for s in runner.status(runner.names)
            )
        except Exception as exc:  # the database may be down: say so, keep reporting
            figures = f"status unknown ({type(exc).__name__})"
        return f"applied {runner.applied} ({rate(runner.applied):.0f}/s); {figures}"

    return line


@app.command()
def status(
    db: Db,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Each projection: position, head, lag in events and seconds, state, heartbeat;
    one fed by a broker stream: its position and lag per source service."""
    with open_store(db, prefix, schema) as store:
        runner = store.projections()
        try:  # a projection fed by a stream has no place in this store's log: its own lines
            found = [s for s in runner.status() if s.state != STREAM]
        finally:
            runner.close()
        streams = store.stream_status()
    if not found and not streams and not as_json:
        console.print("no projections have run on this database yet")
    for s in found:
        if as_json:
            typer.echo(json.dumps({**asdict(s), "stale": s.stale, "lagging": s.lagging}))
        else:
            console.print(s.describe(), markup=False)
    for line in streams:
        if as_json:
            typer.echo(json.dumps(asdict(line)))
        else:
            console.print(line.describe(), markup=False)


@app.command()
def retry(db: Db, name: Name, prefix: Prefix = "tidings_", schema: Schema = "public") -> None:
    """Resume a paused projection after a fix: it applies the failed event again first.
    A projection run in parts, named without a part, resumes each paused part."""
    with _runner(db, prefix, schema) as runner:
        names = runner.called(name)
        paused = _paused_parts(runner, names)
        for each in names if len(names) == 1 else sorted(paused, key=names.index):
            found = runner.retry(each)
            console.print(
                f"projection {each}: resumes {resumes(found)} when its runner next looks",
                markup=False,
            )
    if len(names) > 1 and not paused:
        console.print(f"projection {name}: none of its {len(names)} parts is paused", markup=False)


@app.command()
def pause(
    db: Db,
    name: Name,
    note: Annotated[str, typer.Option("--note", help="Why: kept with the pause.")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who (default: the OS user).")] = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Hold a projection by hand: its runners leave it alone until retry. A projection
    run in parts, named without a part, is held in every part not paused already."""
    who = by or getpass.getuser()
    with _runner(db, prefix, schema) as runner:
        names = runner.called(name)
        paused = _paused_parts(runner, names)
        for each in names:
            if each in paused:
                console.print(f"projection {each}: paused already", markup=False)
                continue
            found = runner.pause(each, who, note)
            console.print(f"projection {each}: paused at position {found.position}", markup=False)
    console.print(f"resume it with tidings projections retry {name}", markup=False)


def _paused_parts(runner: ProjectionRunner, names: list[str]) -> set[str]:
    """Which of a projection's several parts are paused; none is looked up for a single
    name, whose own pause or retry says what it is."""
    if len(names) == 1:
        return set()
    return {s.name for s in runner.status(names) if s.state == PAUSED}


@app.command()
def skip(
    db: Db,
    name: Name,
    position: Annotated[int, typer.Option(help="The position it paused on (see status).")],
    note: Annotated[str, typer.Option("--note", help="Why: kept with the skip.")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who (default: the OS user).")] = None,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Pass over the one event a paused projection failed on; the skip is recorded."""
    with _runner(db, prefix, schema) as runner:
        skipped = runner.skip(name, position, by or getpass.getuser(), note)
    console.print(
        f"projection {name}: skipped position {skipped.position} (event {skipped.event_id}, "
        f"{skipped.event_type}); it goes on from there",
        markup=False,
    )


@app.command()
def reset(
    db: Db,
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Forget a projection's checkpoint: it starts again from position 0 (empty it first)."""
    question = f"Start projection {name!r} again from position 0? Its tables must be empty"
    if not yes and not typer.confirm(question):
        raise typer.Abort
    with _runner(db, prefix, schema) as runner:
        gone = runner.reset(name)
    if not gone:
        raise ProjectionError(
            f"no projection is named {name!r} here: see tidings projections status"
        )
    console.print(f"projection {name}: starts again from position 0 on its next run", markup=False)


Projections = Annotated[
    str, typer.Option(help="Your Projection (or a list of them) as package.module:attr.")
]


def _one(path: str, name: str) -> Projection:
    found = [p for p in load_projections(path) if p.name == name]
    if not found:
        raise ConfigurationError(f"--projections {path} has no projection named {name!r}")
    return found[0]


@app.command()
def rebuild(
    db: Db,
    name: Name,
    projections: Projections,
    verify: Annotated[
        bool,
        typer.Option(help="Compare with the live read model row by row; swap only if equal."),
    ] = False,
    restart: Annotated[
        bool, typer.Option(help="Drop a rebuild under way and start again from position 0.")
    ] = False,
    swap: Annotated[bool, typer.Option(help="Swap once caught up (--no-swap: build only).")] = True,
    registry: Annotated[
        str | None,
        typer.Option(help="Your EventRegistry as module:attr (default: the handlers' events)."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Events per transaction.")] = 5000,
    every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 10.0,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Build NAME's new version into shadow tables while the live one serves, then swap
    it in atomically (the old tables are kept for rollback). Resumes after a crash."""
    projection = _one(projections, name)
    events = load(registry, "--registry") if registry else None
    stop = stop_on_signals()
    with open_store(db, prefix, schema, registry=events) as store:
        job = store.rebuild(projection, batch=batch)
        shadow = job.begin(restart=restart)
        progress.print(
            f"rebuild {name} v{projection.version}: from position {shadow.position}, "
            f"{store.database.describe()}",
            markup=False,
        )
        with reporting(_rebuild_progress(job), every):
            job.catch_up(stop.is_set, until_live=verify)
        if stop.is_set():
            progress.print(f"rebuild {name}: stopped; run it again to go on", markup=False)
            raise typer.Exit(1)
        if not swap:
            return
        try:
            swapped = job.swap(verify=verify)
        except VerifyError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(2) from None
    console.print(
        f"projection {name}: version {swapped.version} swapped in at position "
        f"{swapped.position}{' (verified equal)' if verify else ''}; the old tables are kept: "
        f"tidings projections rollback {name}, or drop-old {name}",
        markup=False,
    )


def _rebuild_progress(job: Rebuild) -> Any:
    rate = Rate()
    speed = [0.0]

    def line() -> str:
        try:
            p = job.progress()
        except Exception as exc:  # the database may be down: say so, keep reporting
            return f"rebuild {job.name}: position unknown ({type(exc).__name__})"
        now = rate(job.applied)
        speed[0] = now if not speed[0] else 0.5 * speed[0] + 0.5 * now
        left = max(p.head - p.position, 0)
        share = 100.0 * p.position / p.head if p.head else 100.0
        eta = f"ETA {left / speed[0]:.0f} s" if speed[0] > 0 else "ETA unknown"
        return (
            f"rebuild {p.name} v{p.version}: position {p.position} of {p.head} "
            f"({share:.0f}%), {now:.0f}/s, {eta}"
        )

    return line


@app.command()
def rollback(
    db: Db,
    name: Name,
    projections: Projections,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Swap the version before the last rebuild back in; the rebuilt tables are dropped."""
    projection = _one(projections, name)
    with open_store(db, prefix, schema) as store:
        back = store.rebuild(projection).rollback()
    console.print(
        f"projection {name}: version {back.version} is back at position {back.position}; "
        "run its runner with that version's code",
        markup=False,
    )


@app.command("drop-old")
def drop_old(
    db: Db,
    name: Name,
    projections: Projections,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Drop the tables of the version the last rebuild swapped out (no rollback after)."""
    projection = _one(projections, name)
    if not yes and not typer.confirm(f"Drop the old tables of {name!r}? No rollback after"):
        raise typer.Abort
    with open_store(db, prefix, schema) as store:
        dropped = store.rebuild(projection).drop_old()
    console.print(f"projection {name}: dropped {', '.join(dropped) or 'no tables'}", markup=False)

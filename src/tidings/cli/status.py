"""``tidings status``: one screen for the whole service, from its database."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from tidings.cli.options import Db, Prefix, Schema, open_store
from tidings.domain.projection_state import PAUSED
from tidings.observability.figures import Figures, ServiceFigures

MaxAge = Annotated[
    float, typer.Option(help="--check: most seconds the oldest unpublished event may wait.")
]
MaxLag = Annotated[float, typer.Option(help="--check: most seconds a projection may lag.")]


def status(
    db: Db,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when a threshold is crossed (for probes).")
    ] = False,
    max_age: MaxAge = 60.0,
    max_lag: MaxLag = 10.0,
    prefix: Prefix = "tidings_",
    schema: Schema = "public",
) -> None:
    """Outbox, dead letters, sagas, projections and workers seen alive, on one screen."""
    with open_store(db, prefix, schema, outbox=True) as store:
        figures = ServiceFigures(store)
        try:
            found = figures.read()
        finally:
            figures.close()
    problems = crossed(found, max_age, max_lag)
    if as_json:
        typer.echo(json.dumps({**asdict(found), "problems": problems}, sort_keys=True))
    else:
        for line in screen(found):
            typer.echo(line)
        for problem in problems:
            typer.echo(f"! {problem}")
    if check and problems:
        raise typer.Exit(1)


def crossed(f: Figures, max_age: float, max_lag: float) -> list[str]:
    """The thresholds ``f`` crosses, one line each (empty when all is well)."""
    problems = []
    if f.outbox is not None:
        if f.outbox.oldest_age_seconds > max_age:
            problems.append(
                f"the oldest unpublished event waits {f.outbox.oldest_age_seconds:.0f} s"
                f" (over {max_age:g} s): see docs/operations.md, the backlog grows"
            )
        if f.outbox.dead_letters:
            problems.append(
                f"{f.outbox.dead_letters} outbox dead letter(s): tidings outbox dead-letters"
            )
    if f.inbox_dead_letters:
        problems.append(f"{f.inbox_dead_letters} inbox dead letter(s): tidings inbox dead-letters")
    if f.needing_intervention:
        problems.append(
            f"{f.needing_intervention} saga(s) need intervention:"
            " tidings sagas list --state needs-intervention"
        )
    for p in f.projections:
        if p.state == PAUSED and not p.failed_event_id:
            problems.append(f"projection {p.name} is {p.error}")
        elif p.state == PAUSED:
            problems.append(f"projection {p.name} is paused on position {p.failed_position}")
        elif p.lag_seconds > max_lag:
            problems.append(f"projection {p.name} lags {p.lag_seconds:.1f} s (over {max_lag:g} s)")
        if p.stale:
            problems.append(f"projection {p.name} has no heartbeat: its runner is stuck or gone")
    return problems


def screen(f: Figures) -> list[str]:
    """The figures as lines for a terminal."""
    lines = []
    if f.outbox is not None:
        o = f.outbox
        lines.append(
            f"outbox      backlog {o.backlog}, oldest {o.oldest_age_seconds:.1f} s,"
            f" dead letters {o.dead_letters}"
        )
    lines.append(f"inbox       dead letters {f.inbox_dead_letters}")
    if not f.sagas:
        lines.append("sagas       none")
    for saga, states in sorted(f.sagas.items()):
        counts = ", ".join(f"{state.lower()} {n}" for state, n in sorted(states.items()))
        cost = f.compensation_costs.get(saga, 0.0)
        failures = f.compensation_failures.get(saga, 0)
        lines.append(
            f"saga        {saga}: {counts}; compensation failures {failures}, cost {cost:g}"
        )
    if not f.projections:
        lines.append("projection  none")
    for p in f.projections:
        lines.append(f"projection  {p.describe()}")
    if not f.relays:
        lines.append("relay       none seen alive")
    for r in f.relays:
        lines.append(f"relay       {r.describe()}")
    if not f.workers:
        lines.append("worker      none seen (workers started by the tidings command beat here)")
    for w in f.workers:
        lines.append(f"worker      {w.describe()}")
    return lines

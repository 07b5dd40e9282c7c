"""An orchestrator process for the SIGKILL tests: it starts SAGAS sagas (those not
started yet) and drives every due saga until all have ended, then exits 0.

Usage: python saga_process.py DB_URL SAGAS [SCHEMA]   (SCHEMA: PostgreSQL's, for every table)

Every action and compensation writes a row to ``saga_effects`` through its unit of work,
with the saga's state as that transaction saw it, so the test can tell an effect that
took place twice, or after its saga ended.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import tidings
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext, StepRefusedError

ENDED = ("COMPLETED", "COMPENSATED", "NEEDS_INTERVENTION")
FAST = RetryPolicy(retries=5, delays=(0.01, 0.02, 0.04, 0.08, 0.16))


def effect(what: str, *, refuse_every: int = 0, flaky: float = 0.0) -> Any:
    def run(ctx: StepContext) -> None:
        saga = ctx.idempotency_key.split(":")[0]
        state = ctx.uow.execute(
            f"SELECT state FROM {TABLES['sagas']} WHERE saga_id = :id", {"id": saga}
        ).fetchone()[0]
        ctx.uow.execute(
            f"INSERT INTO {TABLES['effects']} VALUES (:saga, :what, :state)",
            {"saga": saga, "what": what, "state": state},
        )
        if refuse_every and int(ctx.data["n"]) % refuse_every == 0:
            raise StepRefusedError("refused on purpose")
        if random.random() < flaky:
            raise ConnectionError("flaky on purpose")

    return run


DEFINITION = SagaDefinition(
    "killed",
    [
        Step("a", effect("a"), effect("undo a", flaky=0.3), compensation_retry=FAST),
        Step("b", effect("b", flaky=0.2), effect("undo b"), retry=FAST, compensation_retry=FAST),
        Step("c", effect("c"), None),
        Step("d", effect("d", refuse_every=3), effect("undo d")),
    ],
)
TABLES: dict[str, str] = {}


def effects_table(schema: str) -> str:
    """Where the effects are written: beside the saga tables."""
    return f"{schema}.saga_effects" if schema else "saga_effects"


def main(url: str, count: int, schema: str = "") -> None:
    # SIGKILL ends the process, not the machine: what SQLite wrote stays in the OS's
    # cache, so its durability setting is no part of what these tests check, and NORMAL
    # spares them a disk flush per transition.
    options: dict[str, Any] = {"schema": schema} if schema else {"synchronous": "NORMAL"}
    with tidings.connect(url, **options) as store:
        TABLES.update(getattr(store.database, "tables", {}))
        TABLES["effects"] = effects_table(schema)
        with store.unit_of_work() as uow:
            uow.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLES['effects']} (saga TEXT, what TEXT, state TEXT)"
            )
        sagas = store.sagas([DEFINITION], lease=0.5)
        for n in range(count):
            if sagas.get(f"s-{n}") is None:
                sagas.start(DEFINITION, {"n": n}, saga_id=f"s-{n}")
        while True:
            sagas.run_once()
            states = {s.state for s in sagas.listing(limit=count + 10)}
            if states <= set(ENDED):
                return


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])

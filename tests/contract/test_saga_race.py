"""Two orchestrators racing on the same sagas (SQLite and PostgreSQL): each transition
happens once, and each step's effect is committed once."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import tidings
from tests.conftest import MakeStore
from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepRefusedError,
)

SAGAS = 20


def test_two_orchestrators_racing_on_the_same_sagas_make_each_transition_once(
    make_sql_store: MakeStore,
) -> None:
    """Both start driving the same due sagas at one moment (a barrier); afterwards every
    saga has one success per step, one compensation per compensated step, one end."""
    first = make_sql_store()
    table = f"race_{uuid.uuid4().hex[:10]}"
    with first.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {table} (saga TEXT, what TEXT)")
    now = [1_000.0]
    warm = set()

    def effect(what: str) -> Any:
        def act(ctx: StepContext) -> None:
            saga = str(ctx.data["n"])
            if what == "a" and saga not in warm:  # fail once, so every saga waits on a timer
                warm.add(saga)
                raise TimeoutError("not yet")
            ctx.uow.execute(f"INSERT INTO {table} VALUES (:s, :w)", {"s": saga, "w": what})
            if what == "c" and int(saga) % 2:
                raise StepRefusedError("odd sagas are refused at c")

        return act

    definition = SagaDefinition(
        "race",
        [
            Step("a", effect("a"), effect("undo a"), retry=RetryPolicy(1)),
            Step("b", effect("b"), effect("undo b")),
            Step("c", effect("c")),
        ],
    )
    setup = first.sagas([definition], clock=lambda: now[0])
    ids = [setup.start(definition, {"n": n}).saga_id for n in range(SAGAS)]
    now[0] = 2_000.0  # every timer is due now
    stores = [first, second_store(first)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def drive(store: Any) -> None:
        sagas = store.sagas([definition], clock=lambda: now[0])
        try:
            barrier.wait(timeout=60)
            while sagas.run_once():
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stores[1].close()
    assert errors == []
    for saga_id in ids:
        result = setup.get(saga_id)
        assert result is not None
        n = int(result.data["n"])
        assert result.state == ("COMPENSATED" if n % 2 else "COMPLETED")
        kinds = Counter((t.kind, t.step) for t in setup.history(saga_id))
        repeated = {k: c for k, c in kinds.items() if c > 1 and k[0] != "action_started"}
        assert repeated == {}, f"saga {n} made transitions more than once: {repeated}"
    with first.unit_of_work() as uow:
        rows = Counter(tuple(r) for r in uow.execute(f"SELECT saga, what FROM {table}"))
    assert {k: c for k, c in rows.items() if c > 1} == {}
    assert sum(1 for (_, what) in rows if what.startswith("undo")) == 2 * (SAGAS // 2)


def second_store(first: Any) -> Any:
    """Another store on the same database, with its own connections: a second orchestrator."""
    database = first.database
    if database.dialect == "sqlite":
        return tidings.connect(f"sqlite:///{database.path}")
    return tidings.connect(database.url, schema=database.schema)

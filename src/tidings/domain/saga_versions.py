"""Moving running sagas to a new version of their definition: upcasters.

A saga keeps the definition version it started with. When a new version is deployed
while old instances wait, each old instance either finishes on the steps it started with
(keep the old ``SagaDefinition`` beside the new one) or is moved forward by an upcaster,
the way the event store upcasts old events on read::

    def to_v2(old: SagaPosition) -> SagaPosition:
        # v2 renamed "charge" to "charge-card" and put a fraud check before it
        rename = {"charge": "charge-card"}
        return replace(
            old,
            executed=[rename.get(s, s) for s in old.executed],
            compensated=[rename.get(s, s) for s in old.compensated],
            step=old.step + 1 if old.step >= 1 else old.step,  # the check is skipped
            data={**old.data, "currency": old.data.get("currency", "EUR")},
        )

    SagaUpcaster("create-order", from_version=1, to_version=2, upcast=to_v2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SagaPosition:
    """Where a saga stands, as an upcaster sees and returns it.

    ``step`` is the index of the next step to run (while RUNNING); ``executed`` the names
    of the steps that succeeded, in order (they are compensated last first);
    ``compensated`` those already undone. ``state`` is for reading only."""

    state: str
    data: dict[str, Any]
    step: int
    executed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)


SagaUpcast = Callable[[SagaPosition], "SagaPosition | None"]
"""Maps a position under the old version to one under the new; None leaves the saga on
its version (it then finishes on its old definition, which must be deployed)."""


@dataclass(frozen=True)
class SagaUpcaster:
    """Moves sagas of ``saga`` from ``from_version`` to ``to_version`` (chained with
    others up to the newest version the code has)."""

    saga: str
    from_version: int
    to_version: int
    upcast: SagaUpcast

    def __post_init__(self) -> None:
        if not self.saga:
            raise ValueError("a saga upcaster needs the name of the saga it moves")
        if not 1 <= self.from_version < self.to_version:
            raise ValueError(
                f"SagaUpcaster({self.saga!r}, {self.from_version}, {self.to_version}):"
                " versions start at 1 and an upcaster moves to a higher one"
            )

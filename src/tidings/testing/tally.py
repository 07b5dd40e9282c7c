"""Tally: the smallest event-sourced aggregate, with snapshots, for the contract suites."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7
from tidings.testing.contract import Counted, Named


@dataclass(frozen=True, kw_only=True)
class TallyState:
    """What a Tally snapshot holds."""

    total: int
    name: str
    notes: tuple[str, ...]


class Tally(EventSourcedAggregate):
    """Adds up ``Counted`` steps and keeps the last ``Named`` name; every note is kept."""

    snapshot_version = 1
    snapshot_type = TallyState

    def __init__(self, tally_id: str, *, clock: Clock = utc_now, ids: IdSource = uuid7) -> None:
        super().__init__(tally_id, clock=clock, ids=ids)
        self.total = 0
        self.name = ""
        self.notes: list[str] = []

    def add(self, step: int, note: str = "") -> None:
        """Record one step."""
        self.record(Counted(step=step, note=note))

    def rename(self, name: str) -> None:
        """Record a new name."""
        self.record(Named(name=name))

    def _counted(self, event: Counted) -> None:
        self.total += event.step
        if event.note:
            self.notes.append(event.note)

    def _named(self, event: Named) -> None:
        self.name = event.name

    appliers = {Counted: _counted, Named: _named}

    def to_snapshot(self) -> TallyState:
        """The state as a TallyState."""
        return TallyState(total=self.total, name=self.name, notes=tuple(self.notes))

    def restore_snapshot(self, state: TallyState) -> None:
        """Set the state from a TallyState."""
        self.total, self.name, self.notes = state.total, state.name, list(state.notes)


def tally_commands(tally: Tally, commands: list[tuple[int, str]]) -> None:
    """Run ``(step, note)`` commands on ``tally``; a negative step renames it instead."""
    for step, note in commands:
        if step < 0:
            tally.rename(note or "unnamed")
        else:
            tally.add(step, note)

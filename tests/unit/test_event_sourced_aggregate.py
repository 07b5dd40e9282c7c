"""EventSourcedAggregate: record applies, replay rebuilds, snapshots restore; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain import DomainEvent, EventSourcedAggregate
from tidings.testing import FixedClock, SequentialIds
from tidings.testing.contract import Counted, Named
from tidings.testing.tally import Tally, TallyState, tally_commands

COMMANDS = st.lists(
    st.tuples(st.integers(-1, 50), st.sampled_from(["", "gift", "rush"])), max_size=40
)


@dataclass(frozen=True, kw_only=True)
class Refused(DomainEvent):
    """An event whose applier refuses it."""


class Strict(Tally):
    """A Tally with one applier that raises, to show what a failed apply leaves behind."""

    def _refused(self, event: Refused) -> None:
        raise RuntimeError("cannot apply this")

    appliers = {**Tally.appliers, Refused: _refused}


def new_tally() -> Tally:
    """A Tally with a fixed clock and readable ids."""
    return Tally("t-1", clock=FixedClock(), ids=SequentialIds())


def test_recording_an_event_applies_it_and_keeps_it_pending() -> None:
    """The state changes at once; the stamped event is pending and counted in version."""
    tally = new_tally()
    tally.add(5, "first")
    assert (tally.total, tally.notes) == (5, ["first"])
    (event,) = tally.pending_events
    assert isinstance(event, Counted)
    assert (event.event_id, event.aggregate_id, event.aggregate_version) == ("evt-000001", "t-1", 1)
    assert (tally.version, tally.stored_version) == (1, 0)


def test_an_event_without_an_applier_is_refused_and_leaves_nothing_behind() -> None:
    """TypeError naming the event, the class and what it maps; no state, no pending event."""

    @dataclass(frozen=True, kw_only=True)
    class Teleported(DomainEvent):
        """An event Tally has no applier for."""

    tally = new_tally()
    with pytest.raises(TypeError, match=r"Tally has no applier for Teleported.*Counted, Named"):
        tally.record(Teleported())
    assert (tally.version, tally.pending_events) == (0, ())


def test_an_applier_that_raises_leaves_the_event_unrecorded() -> None:
    """Applying happens before keeping: a failing applier adds no pending event, no version."""
    strict = Strict("s-1")
    strict.add(1)
    with pytest.raises(RuntimeError, match="cannot apply"):
        strict.record(Refused())
    assert (strict.version, len(strict.pending_events)) == (1, 1)


@given(commands=COMMANDS)
def test_reconstituting_the_recorded_events_gives_the_same_aggregate(
    commands: list[tuple[int, str]],
) -> None:
    """For any commands: the same state and version, and nothing pending."""
    recorder = new_tally()
    tally_commands(recorder, commands)
    events = recorder.pull_events()
    rebuilt = Tally.reconstitute("t-1", iter(events))
    assert rebuilt.to_snapshot() == recorder.to_snapshot()
    assert (rebuilt.version, rebuilt.stored_version) == (len(commands), len(commands))
    assert rebuilt.pending_events == ()


def test_a_reconstituted_aggregate_continues_at_the_next_version() -> None:
    """New events after loading are stamped with the versions that follow the stored ones."""
    recorder = new_tally()
    tally_commands(recorder, [(1, ""), (2, "")])
    rebuilt = Tally.reconstitute("t-1", recorder.pull_events(), ids=SequentialIds("next-"))
    assert rebuilt.record(Named(name="n")).aggregate_version == 3
    assert rebuilt.stored_version == 2


def test_replay_refuses_gaps_other_streams_and_unsaved_events() -> None:
    """Events must be this stream's, each the next version; replay is for loading only."""
    recorder = new_tally()
    tally_commands(recorder, [(1, ""), (2, ""), (3, "")])
    first, second, third = recorder.pull_events()
    with pytest.raises(ValueError, match="without gaps"):
        Tally.reconstitute("t-1", [first, third])
    with pytest.raises(ValueError, match="this stream's"):
        Tally.reconstitute("t-2", [first])
    with pytest.raises(ValueError, match="without gaps"):
        third_as_two = third.stamped(
            event_id=third.event_id,
            occurred_at=third.occurred_at,
            aggregate_id=third.aggregate_id,
            aggregate_version=2,
        )
        Tally.reconstitute("t-1", [first, second, third_as_two])
    busy = new_tally()
    busy.add(1)
    with pytest.raises(ValueError, match="unsaved events"):
        busy.replay([first])


def test_from_snapshot_restores_state_and_version() -> None:
    """The state comes from the snapshot, the version from its place in the stream."""
    state = TallyState(total=42, name="visits", notes=("a", "b"))
    tally = Tally.from_snapshot("t-1", 17, state, ids=SequentialIds())
    assert (tally.to_snapshot(), tally.version, tally.stored_version) == (state, 17, 17)
    tally.add(1)
    assert (tally.total, tally.pending_events[0].aggregate_version) == (43, 18)


def test_a_class_that_declares_no_snapshot_state_cannot_take_one() -> None:
    """The base class has no snapshot state: both halves say what to define."""

    class Bare(EventSourcedAggregate):
        """An event-sourced aggregate without snapshots."""

    bare = Bare("b-1")
    with pytest.raises(TypeError, match="takes no snapshots"):
        bare.to_snapshot()
    with pytest.raises(TypeError, match="define restore_snapshot"):
        Bare.from_snapshot("b-1", 3, {})
    assert (Bare.snapshot_version, Bare.appliers) == (0, {})


def test_the_type_name_is_the_class_name_unless_set() -> None:
    """Snapshots are stored under ``aggregate_type`` if a class sets it, else its name;
    a subclass does not inherit its parent's name by accident."""

    class Renamed(Tally):
        """A Tally stored under another name."""

        aggregate_type = "shop.tally"

    class Child(Renamed):
        """A subclass that sets no name of its own."""

    assert (Tally.type_name(), Renamed.type_name(), Child.type_name()) == (
        "Tally",
        "shop.tally",
        "Child",
    )


def test_the_applier_map_is_a_plain_dict_of_the_class_methods() -> None:
    """No registration magic: the map holds the very functions defined in the class."""
    assert Tally.appliers == {Counted: Tally.__dict__["_counted"], Named: Tally.__dict__["_named"]}

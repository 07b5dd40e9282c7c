"""SnapshotCodec: the declared snapshot state to JSON and back, validated; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tidings import ConfigurationError, DecodeError, SerializationError
from tidings.domain import Clock, EventSourcedAggregate, IdSource, utc_now, uuid7
from tidings.serialization import SnapshotCodec
from tidings.testing.tally import Tally, TallyState

TAKEN = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Window:
    """A snapshot state with a time in it."""

    opens: datetime


class Shop(EventSourcedAggregate):
    """An aggregate whose snapshot state is a datetime (and whose state can be broken)."""

    snapshot_version = 3
    snapshot_type = Window

    def __init__(self, shop_id: str, *, clock: Clock = utc_now, ids: IdSource = uuid7) -> None:
        super().__init__(shop_id, clock=clock, ids=ids)
        self.opens: object = datetime(2025, 1, 1, tzinfo=UTC)

    def to_snapshot(self) -> Window:
        """The opening time."""
        return Window(opens=self.opens)  # type: ignore[arg-type]

    def restore_snapshot(self, state: Window) -> None:
        """Set the opening time."""
        self.opens = state.opens


def test_a_snapshot_round_trips_with_its_type_version_and_place() -> None:
    """Encoded from memory at the aggregate's version; decoded into ``snapshot_type``."""
    codec = SnapshotCodec()
    tally = Tally.from_snapshot("t-1", 12, TallyState(total=5, name="n", notes=("a",)))
    record = codec.encode(tally, TAKEN)
    assert (record.stream_id, record.version, record.aggregate_type) == ("t-1", 12, "Tally")
    assert (record.snapshot_version, record.taken_at) == (1, TAKEN)
    assert codec.decode(record, Tally) == TallyState(total=5, name="n", notes=("a",))


def test_a_time_with_a_seconds_offset_keeps_its_instant() -> None:
    """JSON offsets have whole minutes: such a time is stored in UTC, the same instant."""
    codec = SnapshotCodec()
    shop = Shop("s-1")
    odd = timezone(timedelta(minutes=9, seconds=21))
    shop.opens = datetime(1890, 5, 1, 8, 0, tzinfo=odd)
    state = codec.decode(codec.encode(shop, TAKEN), Shop)
    assert state.opens == shop.opens


def test_a_class_without_snapshot_state_is_refused() -> None:
    """snapshot_version 0: a ConfigurationError that says what to declare."""

    class Bare(EventSourcedAggregate):
        """No snapshots declared."""

    with pytest.raises(ConfigurationError, match="set its snapshot_version"):
        SnapshotCodec().encode(Bare("b-1"), TAKEN)


def test_state_that_json_cannot_carry_is_a_serialization_error() -> None:
    """An object msgspec cannot encode is refused with the class and aggregate id."""
    shop = Shop("s-1")
    shop.opens = object()
    with pytest.raises(SerializationError, match="snapshot state of Shop s-1"):
        SnapshotCodec().encode(shop, TAKEN)


def test_a_snapshot_that_does_not_fit_the_type_says_to_bump_the_version() -> None:
    """Decoding validates: a wrong shape is a DecodeError naming the stream and the fix."""
    codec = SnapshotCodec()
    record = codec.encode(Tally("t-1"), TAKEN)
    with pytest.raises(DecodeError, match=r"'t-1' at version 0.*bump Shop.snapshot_version"):
        codec.decode(record, Shop)

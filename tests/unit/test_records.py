"""EventRecord's fast constructor and the in-place position of fresh records."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from tidings.records import EventRecord, FreshRecords, new_record, place, place_all

WHEN = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
FIELDS = ("evt-1", "order-1", 3, "OrderPlaced", 2, WHEN, b'{"a":1}', b'{"m":2}', 17)


def test_new_record_is_exactly_the_record_the_dataclass_builds() -> None:
    """Same class, same fields, equal and of equal hash, and dataclasses.replace works."""
    fast, slow = new_record(*FIELDS), EventRecord(*FIELDS)
    assert type(fast) is EventRecord
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert dataclasses.astuple(fast) == FIELDS
    assert dataclasses.replace(fast, position=18) == dataclasses.replace(slow, position=18)


def test_a_record_from_new_record_is_frozen() -> None:
    """Its fields cannot be set or deleted, like any EventRecord's."""
    record = new_record(*FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.position = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del record.data  # type: ignore[misc]
    assert record.position == 17


def test_place_gives_a_fresh_record_its_position_and_changes_nothing_else() -> None:
    """The record of a FreshRecords list gets its position in place; its other fields stay."""
    [record] = FreshRecords([new_record(*FIELDS[:-1], 0)])
    place(record, 42)
    assert record == EventRecord(*FIELDS[:-1], 42)


def test_place_all_gives_each_fresh_record_its_own_position_in_order() -> None:
    """The first record gets the first position, and so on; the records stay the same
    objects, and a count of positions that does not match is refused."""
    records = FreshRecords([new_record(*FIELDS[:-1], 0), new_record(*FIELDS[:-1], 0)])
    first, second = records
    place_all(records, [7, 8])
    assert [r.position for r in records] == [7, 8]
    assert records[0] is first
    assert records[1] is second
    with pytest.raises(ValueError, match="zip"):
        place_all(records, [9])

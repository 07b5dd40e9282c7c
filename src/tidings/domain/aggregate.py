"""Aggregate: records events as it changes state; never sends them anywhere."""

from __future__ import annotations

from typing import TypeVar

from tidings.domain._fast import with_envelope
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7

E = TypeVar("E", bound=DomainEvent)


class Aggregate:
    """A consistency boundary that records what happened to it as domain events.

    ``version`` counts every event the aggregate has recorded, stored or pending. A
    state-based aggregate loaded from its own table must be given the version it was saved
    with (``Order(id, version=row.version)``): the store uses it to detect a concurrent
    writer, exactly as an event-sourced aggregate does.
    """

    def __init__(
        self,
        aggregate_id: str,
        *,
        version: int = 0,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> None:
        if not aggregate_id:
            raise ValueError("an aggregate needs a non-empty id")
        if version < 0:
            raise ValueError(f"an aggregate version cannot be negative (got {version})")
        self._id = str(aggregate_id)
        self._version = version
        self._pending: list[DomainEvent] = []
        self._clock = clock
        self._ids = ids

    @property
    def id(self) -> str:
        """The aggregate's identity, which is also its stream id."""
        return self._id

    @property
    def version(self) -> int:
        """Number of events recorded so far, including those not yet saved."""
        return self._version

    @property
    def stored_version(self) -> int:
        """The version the store holds: ``version`` less the pending events."""
        return self._version - len(self._pending)

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """Events recorded but not yet handed on, oldest first (a copy; nothing clears)."""
        return tuple(self._pending)

    def record(self, event: E) -> E:
        """Stamp ``event`` with id, time, aggregate id and next version, and keep it pending.

        Returns the stamped event. The event is not sent anywhere: the unit of work hands
        it on after the transaction that saves this aggregate commits.
        """
        if event.event_id:  # is_stamped(), without a call: this runs for every event
            raise recorded_twice(event)
        # A copy with the envelope of the next version, as dataclasses.replace would
        # make, made the cheap way.
        stamped = with_envelope(event, self._ids(), self._clock(), self._id, self._version + 1)
        self._pending.append(stamped)  # now part of version
        self._version += 1
        return stamped

    def pull_events(self) -> list[DomainEvent]:
        """Return the pending events and forget them (the unit of work calls this on commit)."""
        events, self._pending = self._pending, []
        return events


def recorded_twice(event: DomainEvent) -> ValueError:
    """The error for an event given to ``record`` a second time."""
    return ValueError(
        f"{type(event).__name__} {event.event_id} was already recorded; "
        "record a new event instead of recording one twice"
    )

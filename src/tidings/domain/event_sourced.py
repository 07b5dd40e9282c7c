"""EventSourcedAggregate: state that changes only by applying the aggregate's own events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self

from tidings.domain._fast import with_envelope
from tidings.domain.aggregate import Aggregate, E, recorded_twice
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7

Applier = Callable[[Any, Any], None]
"""A plain method ``(self, event) -> None`` that changes state by one event."""


class EventSourcedAggregate(Aggregate):
    """An aggregate whose events are its only source of truth (spec 6.3.7).

    A command checks the rules and calls ``record(event)``; ``record`` stamps the event,
    applies it (so state and history cannot drift apart) and keeps it pending for the
    unit of work. Loading applies the stored events in order through the same methods.

    The map from event class to the method that applies it is an explicit dict, written
    below those methods so that it reads on one screen::

        class Order(EventSourcedAggregate):
            def __init__(self, order_id: str, **injected: Any) -> None:
                super().__init__(order_id, **injected)
                self.status = "NEW"  # the state before any event

            def _created(self, event: OrderCreated) -> None:
                self.status = "DRAFT"

            appliers = {OrderCreated: _created}

    ``__init__`` takes the id (and passes on ``clock`` and ``ids``) and sets the state
    before any event; creating commands are classmethods that record the first event.

    Snapshots are opt-in: set ``snapshot_version`` to 1 or more, ``snapshot_type`` to the
    type of the state (a frozen dataclass, say; msgspec validates it on load) and write
    ``to_snapshot`` and ``restore_snapshot``. Bump ``snapshot_version`` whenever the shape
    of that state changes: snapshots of any other version are then ignored and the state
    is rebuilt from the events, never misread.
    """

    appliers: ClassVar[Mapping[type[DomainEvent], Applier]] = {}
    aggregate_type: ClassVar[str] = ""
    snapshot_version: ClassVar[int] = 0
    snapshot_type: ClassVar[Any] = dict

    def __init__(self, aggregate_id: str, *, clock: Clock = utc_now, ids: IdSource = uuid7) -> None:
        super().__init__(aggregate_id, clock=clock, ids=ids)

    @classmethod
    def type_name(cls) -> str:
        """The name snapshots are stored under: ``aggregate_type`` if set, else the class name."""
        return cls.__dict__.get("aggregate_type") or cls.__name__

    @classmethod
    def reconstitute(
        cls,
        aggregate_id: str,
        events: Iterable[DomainEvent],
        *,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> Self:
        """The aggregate rebuilt by applying its stored ``events``, oldest first.

        ``events`` may be a lazy iterator: it is consumed once, event by event.
        """
        aggregate = cls(aggregate_id, clock=clock, ids=ids)
        aggregate.replay(events)
        return aggregate

    @classmethod
    def from_snapshot(
        cls,
        aggregate_id: str,
        version: int,
        state: Any,
        *,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> Self:
        """The aggregate at ``version`` restored from a snapshot's ``state``."""
        aggregate = cls(aggregate_id, clock=clock, ids=ids)
        aggregate.restore_snapshot(state)
        aggregate._version = version
        return aggregate

    def record(self, event: E) -> E:
        """Stamp ``event``, apply it to the state, and keep it pending.

        If applying fails, the event is neither pending nor counted in ``version``.
        """
        if event.event_id:  # is_stamped(), without a call: this runs for every event
            raise recorded_twice(event)
        stamped = with_envelope(event, self._ids(), self._clock(), self._id, self._version + 1)
        applier = self.appliers.get(type(stamped))  # _apply's lookup, inline: every event
        if applier is None:
            self._apply(stamped)  # says which applier is missing
        else:
            applier(self, stamped)
        self._pending.append(stamped)  # now part of version
        self._version += 1
        return stamped

    def replay(self, events: Iterable[DomainEvent]) -> None:
        """Apply stored events, each the next version of this stream; none becomes pending."""
        if self._pending:
            raise ValueError(
                f"{self.id} has unsaved events; stored events can only be replayed onto an "
                "aggregate being loaded"
            )
        for event in events:
            if event.aggregate_version != self._version + 1 or event.aggregate_id != self._id:
                raise ValueError(
                    f"cannot apply {type(event).__name__} of {event.aggregate_id!r} version "
                    f"{event.aggregate_version} to {self._id!r} at version {self._version}: "
                    "events must be this stream's, in version order, without gaps"
                )
            self._apply(event)
            self._version += 1

    def to_snapshot(self) -> Any:
        """The state to snapshot, of ``snapshot_type``; classes that take snapshots define it."""
        raise TypeError(
            f"{type(self).__name__} takes no snapshots: set snapshot_version and "
            "snapshot_type, and define to_snapshot and restore_snapshot"
        )

    def restore_snapshot(self, state: Any) -> None:
        """Set the state from a snapshot (of ``snapshot_type``); the pair of ``to_snapshot``."""
        raise TypeError(
            f"{type(self).__name__} takes no snapshots: define restore_snapshot to use them"
        )

    def _apply(self, event: DomainEvent) -> None:
        applier = self.appliers.get(type(event))
        if applier is None:
            known = ", ".join(sorted(cls.__name__ for cls in self.appliers)) or "none"
            raise TypeError(
                f"{type(self).__name__} has no applier for {type(event).__name__}: add "
                f"{type(event).__name__}: <method> to {type(self).__name__}.appliers "
                f"(it maps: {known})"
            )
        applier(self, event)

"""The pure domain core: events, aggregates, and the injected clock and id source.

Standard library only, no I/O: everything here can be tested without a database.
"""

from tidings.domain.aggregate import Aggregate
from tidings.domain.event_sourced import Applier, EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, UUID7Source, utc_now, uuid7

__all__ = [
    "Aggregate",
    "Applier",
    "Clock",
    "DomainEvent",
    "EventSourcedAggregate",
    "IdSource",
    "UUID7Source",
    "utc_now",
    "uuid7",
]

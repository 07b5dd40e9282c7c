"""Application layer: unit of work, repositories, the in-memory bus; they use ports only."""

from tidings.application.bus import HandlerFailure, InMemoryBus
from tidings.application.event_log import iter_log
from tidings.application.repository import EventSourcedRepository, Loaded
from tidings.application.unit_of_work import UnitOfWork

__all__ = [
    "EventSourcedRepository",
    "HandlerFailure",
    "InMemoryBus",
    "Loaded",
    "UnitOfWork",
    "iter_log",
]

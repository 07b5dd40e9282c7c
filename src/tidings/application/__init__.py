"""Application layer: unit of work and the in-memory bus; they use ports only."""

from tidings.application.bus import HandlerFailure, InMemoryBus
from tidings.application.unit_of_work import UnitOfWork

__all__ = ["HandlerFailure", "InMemoryBus", "UnitOfWork"]

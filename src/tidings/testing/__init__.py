"""Public testing helpers: fakes for the injected clock and ids, and the contract suites.

``StoreContract``, ``EventStoreContract`` and ``EventSourcingContract`` are the behaviour
every backend passes; subclass them in a test module and provide a ``make_store`` fixture
that returns a factory for a fresh, empty store.
"""

from tidings.testing.contract import StoreContract
from tidings.testing.event_sourcing import EventSourcingContract
from tidings.testing.event_store import EventStoreContract
from tidings.testing.fakes import FixedClock, SequentialIds

__all__ = [
    "EventSourcingContract",
    "EventStoreContract",
    "FixedClock",
    "SequentialIds",
    "StoreContract",
]

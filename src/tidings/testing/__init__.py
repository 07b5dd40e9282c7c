"""Public testing helpers: fakes for the injected clock and ids, and the contract suites.

``StoreContract``, ``EventStoreContract``, ``EventSourcingContract``, ``OutboxContract``,
``LeaseContract`` and ``PersonalDataContract`` are the behaviour every backend passes;
subclass them in a test module and provide a ``make_store`` fixture that returns a
factory for a fresh, empty store (called with a registry and keyword options such as
``outbox=True``).
"""

from tidings.testing.contract import StoreContract
from tidings.testing.event_sourcing import EventSourcingContract
from tidings.testing.event_store import EventStoreContract
from tidings.testing.fakes import FixedClock, SequentialIds
from tidings.testing.lease_contract import LeaseContract
from tidings.testing.outbox_contract import OutboxContract
from tidings.testing.personal_data import PersonalDataContract
from tidings.testing.transport import RecordingTransport, plain_message

__all__ = [
    "EventSourcingContract",
    "EventStoreContract",
    "FixedClock",
    "LeaseContract",
    "OutboxContract",
    "PersonalDataContract",
    "RecordingTransport",
    "SequentialIds",
    "StoreContract",
    "plain_message",
]

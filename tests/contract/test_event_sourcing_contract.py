"""The event store and event-sourcing contracts, run against memory, SQLite and PostgreSQL."""

from tidings.testing import EventSourcingContract, EventStoreContract


class TestEventStoreContract(EventStoreContract):
    """Every test of ``tidings.testing.EventStoreContract``, parametrised by ``make_store``."""


class TestEventSourcingContract(EventSourcingContract):
    """Every test of ``tidings.testing.EventSourcingContract``, parametrised by ``make_store``."""

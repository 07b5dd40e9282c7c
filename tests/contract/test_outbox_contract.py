"""The outbox and relay contract, run against every backend (memory, SQLite, PostgreSQL)."""

from tidings.testing import OutboxContract


class TestOutboxContract(OutboxContract):
    """Every test of ``tidings.testing.OutboxContract``, parametrised by ``make_store``."""

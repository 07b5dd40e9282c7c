"""The inbox contract, run against every backend (memory, SQLite, PostgreSQL)."""

from tidings.testing.inbox_contract import InboxContract


class TestInboxContract(InboxContract):
    """Every test of ``tidings.testing.InboxContract``, parametrised by ``make_store``."""

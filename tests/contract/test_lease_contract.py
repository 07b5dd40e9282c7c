"""The lease contract, run against every backend (memory, SQLite, PostgreSQL)."""

from tidings.testing import LeaseContract


class TestLeaseContract(LeaseContract):
    """Every test of ``tidings.testing.LeaseContract``, parametrised by ``make_store``."""

"""The store contract, run against every backend (memory, SQLite, PostgreSQL)."""

from tidings.testing import StoreContract


class TestStoreContract(StoreContract):
    """Every test of ``tidings.testing.StoreContract``, parametrised by ``make_store``."""

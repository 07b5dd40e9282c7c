"""Fair shares of a lease set, and the lease component's own checks (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.adapters.leasing import fair_share
from tidings.adapters.memory import MemoryDatabase
from tidings.adapters.memory_leases import MemoryLeases
from tidings.adapters.sql_leases import SqlLeases
from tidings.errors import ConfigurationError


@given(
    count=st.integers(min_value=1, max_value=64),
    owners=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=12, unique=True),
)
def test_the_shares_of_the_live_owners_add_up_and_differ_by_at_most_one(
    count: int, owners: list[str]
) -> None:
    """Every owner computes its share from the same heartbeats: together they are the
    whole set, and no owner gets more than one slot above another."""
    shares = [fair_share(owner, owners, count) for owner in owners]
    assert sum(shares) == count
    assert max(shares) - min(shares) <= 1


def test_an_owner_not_seen_yet_counts_itself_among_the_live() -> None:
    """The owner asking is live even before its heartbeat is read back."""
    assert fair_share("b", ["a"], 8) == 4
    assert fair_share("a", [], 3) == 3


def test_sql_leases_refuse_a_dialect_they_do_not_speak() -> None:
    """Only SQLite and PostgreSQL: anything else is a clear configuration error."""
    with pytest.raises(ConfigurationError, match="sqlite and postgresql, not 'mysql'"):
        SqlLeases({"leases": "l", "lease_owners": "o"}, dialect="mysql", transaction=None)  # type: ignore[arg-type]


def test_memory_holds_nothing_of_a_set_it_never_leased() -> None:
    """``holds`` on an unknown set: True for no slots, False for any slot."""
    database = MemoryDatabase()
    leases = MemoryLeases(database)
    with database.transaction() as tx:
        assert leases.holds(tx, "a", "never", {})
        assert not leases.holds(tx, "a", "never", {0: 1})


def test_a_store_with_an_outbox_but_no_leases_cannot_make_a_relay() -> None:
    """A store put together by hand without the lease component says how to build one."""
    import tidings

    with tidings.connect("memory://", outbox=True) as full:
        bare = tidings.Store(full.database, full.events, full.registry, outbox=full.outbox)
        with pytest.raises(ConfigurationError, match="no leases for its lanes"):
            bare.relay()

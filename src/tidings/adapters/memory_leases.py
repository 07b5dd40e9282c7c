"""MemoryLeases: the reference lease component, over dicts under the memory backend's lock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tidings.adapters.leasing import check_lease, fair_share
from tidings.adapters.memory import MemoryDatabase
from tidings.errors import LeaseCountError
from tidings.ports import Transaction


@dataclass
class _Slot:
    owner: str | None = None
    token: int = 0
    lease_until: float = 0.0


@dataclass
class _Set:
    slots: dict[int, _Slot] = field(default_factory=dict)
    alive: dict[str, float] = field(default_factory=dict)  # owner -> alive until


class MemoryLeases:
    """The ``Leases`` port in one process. Lease changes take the database's lock, and so
    does every memory transaction: a ``holds`` inside one keeps takeovers out until it
    ends, as a row lock does on PostgreSQL."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database
        self._sets: dict[str, _Set] = {}

    def lease(self, owner: str, name: str, count: int, ttl: float, now: float) -> dict[int, int]:
        """Renew, give back what is over the fair share, take free or expired slots."""
        check_lease(owner, name, count, ttl)
        with self._db.lock:
            leased = self._sets.setdefault(name, _Set())
            self._resize(leased, name, count, now)
            leased.alive = {o: t for o, t in leased.alive.items() if t >= now}
            leased.alive[owner] = now + ttl
            share = fair_share(owner, list(leased.alive), count)
            held = sorted(n for n, s in leased.slots.items() if s.owner == owner)
            for slot in held[share:]:
                leased.slots[slot].owner, leased.slots[slot].lease_until = None, 0.0
            for slot in held[:share]:
                leased.slots[slot].lease_until = now + ttl
            free = [
                n for n, s in sorted(leased.slots.items()) if s.owner is None or s.lease_until < now
            ]
            for slot in free[: max(share - len(held), 0)]:
                taken = leased.slots[slot]
                taken.owner, taken.token, taken.lease_until = owner, taken.token + 1, now + ttl
            return {n: s.token for n, s in leased.slots.items() if s.owner == owner}

    @staticmethod
    def _resize(leased: _Set, name: str, count: int, now: float) -> None:
        """Make the set ``count`` slots, unless live owners hold it at another count.

        New slots start at the highest token the set had, so a slot's token never goes
        back, whatever the set's size was before."""
        stored = len(leased.slots)
        if stored == count:
            return
        if any(s.owner is not None and s.lease_until >= now for s in leased.slots.values()):
            raise LeaseCountError(name, stored, count)
        base = max((s.token for s in leased.slots.values()), default=0)
        leased.slots = {slot: _Slot(token=base) for slot in range(count)}

    def release(self, owner: str, name: str) -> None:
        """Give back every slot ``owner`` holds; it no longer counts as alive."""
        with self._db.lock:
            leased = self._sets.get(name)
            if leased is None:
                return
            for slot in leased.slots.values():
                if slot.owner == owner:
                    slot.owner, slot.lease_until = None, 0.0
            leased.alive.pop(owner, None)

    def holds(self, tx: Transaction, owner: str, name: str, tokens: Mapping[int, int]) -> bool:
        """Whether ``owner`` holds these slots with these tokens (the caller's memory
        transaction holds the lock, so no lease changes until it ends)."""
        with self._db.lock:
            leased = self._sets.get(name)
            slots = leased.slots if leased is not None else {}
            for number, token in tokens.items():
                slot = slots.get(number)
                if slot is None or slot.owner != owner or slot.token != token:
                    return False
            return True

    def close(self) -> None:
        """Nothing held outside the dicts."""

"""Customer: an event-sourced aggregate full of personal data, for the personal-data suites.

The customer is the subject of its own data (``aggregate_id``); a ``Referred`` event holds
a friend's name, whose subject is the friend (``friend_id``), not the customer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7


@dataclass(frozen=True, kw_only=True)
class Registered(DomainEvent):
    """A customer signed up."""

    event_type = "customers.registered"
    personal_data = {"email": "aggregate_id", "name": "aggregate_id"}

    email: str
    name: str | None = None
    tier: str = "basic"


@dataclass(frozen=True, kw_only=True)
class Referred(DomainEvent):
    """The customer referred a friend, who is a subject of their own."""

    event_type = "customers.referred"
    personal_data = {"friend_name": "friend_id"}

    friend_id: str
    friend_name: str


@dataclass(frozen=True, kw_only=True)
class CustomerState:
    """What a Customer snapshot holds; the e-mail is sealed like in the events."""

    personal_data = {"email": "aggregate_id"}

    email: str
    tier: str
    referrals: int


class Customer(EventSourcedAggregate):
    """Registers, refers friends; takes snapshots."""

    snapshot_version = 1
    snapshot_type = CustomerState

    def __init__(self, customer_id: str, *, clock: Clock = utc_now, ids: IdSource = uuid7) -> None:
        super().__init__(customer_id, clock=clock, ids=ids)
        self.email = ""
        self.name: str | None = None
        self.tier = ""
        self.friends: list[str] = []

    def register(self, email: str, name: str | None = None) -> None:
        """Record the sign-up."""
        self.record(Registered(email=email, name=name, tier="gold"))

    def refer(self, friend_id: str, friend_name: str) -> None:
        """Record a referral."""
        self.record(Referred(friend_id=friend_id, friend_name=friend_name))

    def _registered(self, event: Registered) -> None:
        self.email, self.name, self.tier = event.email, event.name, event.tier

    def _referred(self, event: Referred) -> None:
        self.friends.append(event.friend_name)

    appliers = {Registered: _registered, Referred: _referred}

    def to_snapshot(self) -> CustomerState:
        """The state as a CustomerState (friends' names stay in the events)."""
        return CustomerState(email=self.email, tier=self.tier, referrals=len(self.friends))

    def restore_snapshot(self, state: CustomerState) -> None:
        """Set the state from a CustomerState."""
        self.email, self.tier = state.email, state.tier
        self.friends = ["?"] * state.referrals

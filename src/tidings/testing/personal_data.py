"""PersonalDataContract: crypto-shredding on every backend, as one pytest suite.

Subclass it with a ``make_store`` fixture, like ``StoreContract``. The aggregate is
``Customer`` (``tidings.testing.customer``): the customer is the subject of its own
e-mail and name, and a referred friend is the subject of the friend's name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tidings.application.repository import EventSourcedRepository
from tidings.domain.personal import REDACTED
from tidings.ports import OUTBOX_LANES
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.contract import new_id
from tidings.testing.customer import Customer, Referred, Registered

MakeStore = Callable[..., Store]  # called with a registry, and outbox=True by one test
EMAIL, NAME, FRIEND = "ada@example.com", "Ada Lovelace", "Grace Hopper"


def sign_up(store: Store, customers: EventSourcedRepository[Customer]) -> Customer:
    """Save a new customer who registered and referred a friend; return it."""
    customer = Customer(new_id("c"))
    customer.register(EMAIL, NAME)
    customer.refer(new_id("f"), FRIEND)
    with store.unit_of_work() as uow:
        customers.save(uow, customer)
    return customer


def friend_of(store: Store, customer: Customer) -> str:
    """The id of the friend the customer referred."""
    (referred,) = [e for e in store.read_stream(customer.id) if isinstance(e, Referred)]
    return referred.friend_id


class PersonalDataContract:
    """Sealed at rest, clear on read, redacted once forgotten; aggregates still rebuild."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store that knows the Customer events."""
        return make_store(EventRegistry([Registered, Referred]))

    @pytest.fixture
    def customers(self, store: Store) -> EventSourcedRepository[Customer]:
        """The Customer repository, snapshotting every two events."""
        return store.repository(Customer, snapshot_every=2)

    def test_personal_fields_are_stored_sealed_and_read_back_in_clear(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """The stored payload holds tokens, never the plaintext; reads give the plaintext."""
        customer = sign_up(store, customers)
        stored = b" ".join(r.data for r in store.events.read_stream(customer.id))
        for secret in (EMAIL, NAME, FRIEND):
            assert secret.encode() not in stored
        assert stored.count(b"tidings:pd1:") == 3
        assert b"gold" in stored  # fields not marked personal stay in clear
        (registered, referred) = store.read_stream(customer.id)
        assert (registered.email, registered.name, referred.friend_name) == (EMAIL, NAME, FRIEND)  # type: ignore[attr-defined]

    def test_a_forgotten_subject_reads_as_redacted_and_the_aggregate_still_rebuilds(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """After forget, the subject's fields are the marker; the rest of the state holds."""
        customer = sign_up(store, customers)
        assert store.forget(customer.id)
        assert not store.forget(customer.id)  # nothing left to forget
        (registered, referred) = store.read_stream(customer.id)
        assert (registered.email, registered.name) == (REDACTED, REDACTED)  # type: ignore[attr-defined]
        assert referred.friend_name == FRIEND  # type: ignore[attr-defined]  # another subject
        loaded = customers.load(customer.id)
        assert loaded.snapshot_at == 2  # the snapshot was usable, and redacted too
        assert (loaded.aggregate.email, loaded.aggregate.tier) == (REDACTED, "gold")
        replayed = Customer.reconstitute(customer.id, store.read_stream(customer.id))
        assert (replayed.email, replayed.name, replayed.friends) == (REDACTED, REDACTED, [FRIEND])

    def test_forgetting_one_subject_leaves_the_other_subjects_readable(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """The friend's name goes with the friend's key; the customer's data stays."""
        customer = sign_up(store, customers)
        assert store.forget(friend_of(store, customer))
        replayed = Customer.reconstitute(customer.id, store.read_stream(customer.id))
        assert (replayed.email, replayed.name, replayed.friends) == (EMAIL, NAME, [REDACTED])

    def test_snapshots_hold_personal_data_sealed(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """The snapshot's state has a token where the e-mail is; loading opens it."""
        customer = sign_up(store, customers)
        assert store.snapshots is not None
        snapshot = store.snapshots.load_latest(customer.id, "Customer", 1)
        assert snapshot is not None
        assert EMAIL.encode() not in snapshot.state
        assert b"tidings:pd1:" in snapshot.state
        assert customers.get(customer.id).email == EMAIL

    def test_outbox_rows_hold_only_the_ciphertext(self, make_store: MakeStore) -> None:
        """What the relay will read carries tokens, like the event log."""
        store = make_store(EventRegistry([Registered, Referred]), outbox=True)
        sign_up(store, store.repository(Customer))
        assert store.outbox is not None
        assert store.leases is not None
        now = time.time()
        leases = store.leases.lease("relay-1", OUTBOX_LANES, 1, 30.0, now)
        entries = store.outbox.claim(leases, 1, 10, now)
        payloads = b" ".join(entry.record.data for entry in entries)
        assert len(entries) == 2
        assert EMAIL.encode() not in payloads
        assert FRIEND.encode() not in payloads

    def test_a_key_made_in_a_rolled_back_unit_of_work_is_rolled_back_too(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """No key outlives the transaction that made it for nothing."""
        customer = Customer(new_id("c"))
        customer.register(EMAIL)
        with pytest.raises(RuntimeError), store.unit_of_work() as uow:
            customers.save(uow, customer)
            raise RuntimeError("the use case failed")
        assert store.keys is not None
        assert store.keys.find(customer.id) is None
        assert list(store.keys.all_keys()) == []

    def test_a_subject_written_to_after_being_forgotten_gets_a_new_key(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """Old values stay redacted; new ones, under the new key, read in clear."""
        customer = sign_up(store, customers)
        assert store.keys is not None
        old = store.keys.find(customer.id)
        store.forget(customer.id)
        again = customers.get(customer.id)
        again.register("ada@new.example")
        with store.unit_of_work() as uow:
            customers.save(uow, again)
        new = store.keys.find(customer.id)
        assert old is not None
        assert new is not None
        assert new.key_id != old.key_id
        emails = [e.email for e in store.read_stream(customer.id) if isinstance(e, Registered)]
        assert emails == [REDACTED, "ada@new.example"]

    def test_every_key_can_be_listed_for_a_copy(
        self, store: Store, customers: EventSourcedRepository[Customer]
    ) -> None:
        """all_keys gives one key per subject: the customer and the friend."""
        customer = sign_up(store, customers)
        assert store.keys is not None
        subjects = {key.subject for key in store.keys.all_keys()}
        assert subjects == {customer.id, friend_of(store, customer)}

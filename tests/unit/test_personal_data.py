"""Personal data: declarations checked at registration, sealing, opening and the key cache.

The store here is the memory backend (no I/O); every backend's behaviour is in
``tidings.testing.personal_data.PersonalDataContract``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace

import pytest

import tidings
from tidings import ConfigurationError, DecodeError, DomainEvent, EventRegistry, SerializationError
from tidings.domain.personal import REDACTED
from tidings.records import SubjectKey
from tidings.serialization.personal import PersonalDataCipher
from tidings.testing.customer import Customer, Referred, Registered


def memory_store() -> tidings.Store:
    """A memory store that knows the Customer events."""
    return tidings.connect("memory://", registry=EventRegistry([Registered, Referred]))


@dataclass(frozen=True, kw_only=True)
class Counted(DomainEvent):
    """Personal data that cannot read back as the marker: an int."""

    personal_data = {"age": "person_id"}

    person_id: str
    age: int


@dataclass(frozen=True, kw_only=True)
class NoSubject(DomainEvent):
    """A personal field whose subject field is not a field."""

    personal_data = {"email": "person_id"}

    email: str


@dataclass(frozen=True, kw_only=True)
class SelfSubject(DomainEvent):
    """A personal field that would be its own subject: its key could not be found."""

    personal_data = {"email": "email"}

    email: str


@dataclass(frozen=True, kw_only=True)
class Ghost(DomainEvent):
    """Personal data in a field that does not exist."""

    personal_data = {"phone": "aggregate_id"}

    email: str


@dataclass(frozen=True, kw_only=True)
class OptionalSubject(DomainEvent):
    """A subject that may be missing: a key could not always be found."""

    personal_data = {"email": "person_id"}

    person_id: str | None
    email: str


@pytest.mark.parametrize(
    ("cls", "says"),
    [
        (Counted, "Counted.age is personal data, so it must be typed str or str | None"),
        (NoSubject, "'person_id': that must be another str field of NoSubject"),
        (SelfSubject, "'email': that must be another str field"),
        (Ghost, "names 'phone', not a payload field"),
        (OptionalSubject, "'person_id': that must be another str field"),
    ],
)
def test_a_personal_data_declaration_that_cannot_work_is_refused_at_registration(
    cls: type[DomainEvent], says: str
) -> None:
    """The registry names the class, the field and the rule, before anything is stored."""
    with pytest.raises(ConfigurationError, match=says.replace("|", r"\|")):
        EventRegistry([cls])


def test_a_snapshot_state_with_bad_personal_data_is_refused_by_the_repository() -> None:
    """The snapshot type's declaration is checked when the repository is built."""

    @dataclass(frozen=True, kw_only=True)
    class BadState:
        personal_data = {"visits": "aggregate_id"}
        visits: int

    class Visitor(Customer):
        snapshot_type = BadState

    with pytest.raises(ConfigurationError, match="BadState.visits is personal data"):
        memory_store().repository(Visitor)


def sealed_pair(store: tidings.Store) -> tuple[tidings.EventRecord, tidings.EventRecord]:
    """Two Registered records of one customer, encoded (sealed) in one transaction."""
    customer = Customer("c-1")
    customer.register("ada@example.com", "Ada")
    customer.register("ada@work.example", "Ada L.")
    with store.database.transaction() as tx:
        first, second = (store.codec.encode(e, tx=tx) for e in customer.pending_events)
    return first, second


def test_a_sealed_value_moved_into_another_row_does_not_decrypt() -> None:
    """The token is bound to its event id and field: a swap is a DecodeError, not data."""
    store = memory_store()
    first, second = sealed_pair(store)
    assert store.decode(first).email == "ada@example.com"  # type: ignore[attr-defined]
    swapped = replace(second, data=first.data)
    with pytest.raises(DecodeError, match="fails its integrity check"):
        store.decode(swapped)


def test_a_sealed_value_moved_into_another_field_does_not_decrypt() -> None:
    """email's token put in name (same event, same subject) is refused too."""
    store = memory_store()
    first, _ = sealed_pair(store)
    document = json.loads(first.data)
    document["name"] = document["email"]
    with pytest.raises(DecodeError, match="field name"):
        store.decode(replace(first, data=json.dumps(document).encode()))


def test_a_damaged_token_is_a_decode_error() -> None:
    """A token that is not valid base64 is reported, never returned as data."""
    store = memory_store()
    first, _ = sealed_pair(store)
    document = json.loads(first.data)
    document["email"] = document["email"].rsplit(":", 1)[0] + ":@@"
    with pytest.raises(DecodeError, match="does not decrypt"):
        store.decode(replace(first, data=json.dumps(document).encode()))


def test_a_value_stored_before_the_field_was_marked_personal_reads_as_stored() -> None:
    """A plain string (no token) is legacy data: it is read as it is."""
    store = memory_store()
    first, _ = sealed_pair(store)
    legacy = replace(first, data=b'{"email":"old@example.com","name":null,"tier":"basic"}')
    event = store.decode(legacy)
    assert (event.email, event.name) == ("old@example.com", None)  # type: ignore[attr-defined]


def test_sealing_outside_a_transaction_is_refused() -> None:
    """A key is read or made only in the writer's transaction: no tx, no plaintext stored."""
    store = memory_store()
    customer = Customer("c-1")
    customer.register("ada@example.com")
    with pytest.raises(SerializationError, match="only inside a transaction"):
        store.codec.encode(customer.pending_events[0])


def test_a_codec_without_a_cipher_refuses_personal_data() -> None:
    """Without a key store the codec could only store plaintext: it refuses instead."""
    codec = tidings.JsonCodec(EventRegistry([Registered]))
    customer = Customer("c-1")
    customer.register("ada@example.com")
    with pytest.raises(ConfigurationError, match="no key store to seal it with"):
        codec.encode(customer.pending_events[0])


def test_personal_data_without_the_crypto_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No cryptography package: a ConfigurationError naming the extra, nothing stored."""
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    store = memory_store()
    customer = Customer("c-1")
    customer.register("ada@example.com")
    with pytest.raises(ConfigurationError, match=r"tidings\[crypto\]"), store.unit_of_work() as uow:
        uow.track(customer)
    assert store.events.read_all() == []


class CountingKeys:
    """A key store in a dict that counts lookups, with forgetting done 'elsewhere'."""

    def __init__(self) -> None:
        self.keys: dict[str, SubjectKey] = {}
        self.lookups = 0

    def find(self, subject: str, tx: object = None) -> SubjectKey | None:
        self.lookups += 1
        return self.keys.get(subject)

    def create(self, tx: object, key: SubjectKey) -> SubjectKey:
        return self.keys.setdefault(key.subject, key)

    def forget(self, subject: str) -> bool:
        return self.keys.pop(subject, None) is not None

    def all_keys(self) -> list[SubjectKey]:
        return list(self.keys.values())


class Clock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reads_use_cached_keys_until_they_expire() -> None:
    """A key forgotten by another process is readable here until the cache entry ages out;
    then the value is redacted, and the gone key id is remembered without more lookups."""
    keys, clock = CountingKeys(), Clock()
    cipher = PersonalDataCipher(keys, cache_ttl=60.0, clock=clock)  # type: ignore[arg-type]
    token = cipher.seal(object(), "s-1", "secret", "bound")  # type: ignore[arg-type]
    keys.lookups = 0
    assert [cipher.open("s-1", token, "bound") for _ in range(3)] == ["secret"] * 3
    assert keys.lookups == 1
    keys.forget("s-1")  # in another process: this cipher's cache does not know
    clock.now = 59.0
    assert cipher.open("s-1", token, "bound") == "secret"
    clock.now = 61.0
    assert cipher.open("s-1", token, "bound") == REDACTED
    assert cipher.open("s-1", token, "bound") == REDACTED
    assert keys.lookups == 2


def test_the_key_cache_keeps_only_the_most_recent_subjects() -> None:
    """An LRU of ``cache_size`` subjects: the oldest is looked up again."""
    keys = CountingKeys()
    cipher = PersonalDataCipher(keys, cache_size=2)  # type: ignore[arg-type]
    tokens = {s: cipher.seal(object(), s, s, "b") for s in ("a", "b", "c")}  # type: ignore[arg-type]
    keys.lookups = 0
    for subject in ("a", "b", "c", "c", "b", "a"):
        assert cipher.open(subject, tokens[subject], "b") == subject
    assert keys.lookups == 4  # a, b, c, then a again (evicted by c)


def test_sealing_needs_a_subject() -> None:
    """An empty subject id could not find its key again: refused."""
    cipher = PersonalDataCipher(CountingKeys())  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="names no subject"):
        cipher.seal(object(), "", "secret", "bound")  # type: ignore[arg-type]


def test_none_stays_none_and_is_never_sealed() -> None:
    """An optional personal field left empty is stored as null."""
    store = memory_store()
    customer = Customer("c-1")
    customer.register("ada@example.com", None)
    with store.unit_of_work() as uow:
        uow.track(customer)
    (record,) = store.events.read_all()
    assert b'"name":null' in record.data
    assert store.decode(record).name is None  # type: ignore[attr-defined]


def test_a_store_without_a_key_store_cannot_forget() -> None:
    """A Store built by hand without keys says so instead of pretending."""
    base = memory_store()
    bare = tidings.Store(base.database, base.events, base.registry)
    with pytest.raises(ConfigurationError, match="no key store"):
        bare.forget("c-1")

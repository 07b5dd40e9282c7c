"""Personal data at rest: per-subject AES-GCM keys, sealed fields, and forgetting.

Crypto-shredding (spec 6.3.6, mistake 5): each subject has its own data key in the
store's key table. A personal field is stored as a token, ``tidings:pd1:<key id>:<nonce
and ciphertext, base64>``, sealed with the subject's key; the associated data binds it to
the event id (or snapshot) and the field, so a token copied into another row or field
does not decrypt. ``forget(subject)`` deletes the key: every token sealed with it reads
back as ``REDACTED`` from then on, wherever a copy of the row went.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
import time
import types
import typing
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tidings.domain.events import ENVELOPE_FIELDS
from tidings.domain.personal import AGGREGATE_SUBJECT, REDACTED
from tidings.errors import ConfigurationError, DecodeError, SerializationError
from tidings.ports import KeyStore, Transaction
from tidings.records import SubjectKey

PREFIX = "tidings:pd1:"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard; random nonces are safe far beyond one subject's data

PersonalFields = tuple[tuple[str, str], ...]
"""(personal field, subject field) pairs of a class, in declaration order."""


def personal_fields(cls: type) -> PersonalFields:
    """The validated ``personal_data`` of a dataclass, or ``ConfigurationError`` saying why.

    A personal field reads back as ``REDACTED`` once its subject is forgotten, so it must
    be typed ``str`` or ``str | None``; the subject field stays in clear (it finds the
    key), so it is a ``str`` field of its own, or ``aggregate_id``.
    """
    declared = getattr(cls, "personal_data", None) or {}
    if not declared:
        return ()
    name = getattr(cls, "__qualname__", repr(cls))
    if not dataclasses.is_dataclass(cls):
        raise ConfigurationError(f"{name} declares personal_data but is not a dataclass")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # a forward reference that does not resolve
        raise ConfigurationError(f"cannot read the field types of {name}: {exc}") from exc
    payload = {f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE_FIELDS}
    pairs = []
    for field, subject in declared.items():
        if field not in payload:
            raise ConfigurationError(f"{name}.personal_data names {field!r}, not a payload field")
        if not _holds_text(hints[field], optional=True):
            raise ConfigurationError(
                f"{name}.{field} is personal data, so it must be typed str or str | None: "
                f"once its subject is forgotten it reads back as {REDACTED!r}"
            )
        if subject != AGGREGATE_SUBJECT and (
            subject not in payload or subject == field or not _holds_text(hints[subject])
        ):
            raise ConfigurationError(
                f"{name}.personal_data says {field!r} belongs to the subject named by "
                f"{subject!r}: that must be another str field of {name}, or "
                f"{AGGREGATE_SUBJECT!r}; it stays in clear to find the subject's key"
            )
        pairs.append((field, subject))
    return tuple(pairs)


def _holds_text(hint: Any, *, optional: bool = False) -> bool:
    if hint is str:
        return True
    if optional and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint)) == {str, type(None)}
    return False


def _crypto() -> tuple[Any, type[Exception]]:
    """AES-GCM and its integrity-failure exception: the ``cryptography`` package is an
    optional extra, imported only once personal data is met."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as missing:
        raise ConfigurationError(
            "personal data fields are encrypted with AES-GCM, which needs the crypto extra: "
            "pip install 'tidings[crypto]'"
        ) from missing
    return AESGCM, InvalidTag


class PersonalDataCipher:
    """Seals and opens personal fields with the subjects' keys; forgets subjects.

    Writing always reads the subject's key inside the writer's transaction (creating it on
    first use), so nothing is ever sealed with a key that is already gone. Reading keeps
    keys in an LRU cache for ``cache_ttl`` seconds: a subject forgotten by another process
    is still readable here for at most that long. A token whose key id is not the
    subject's current key (the subject was forgotten, maybe written to again since) reads
    as ``REDACTED`` (and its id is remembered as gone); a token that fails its integrity
    check is a ``DecodeError``.
    """

    def __init__(
        self,
        keys: KeyStore,
        *,
        cache_size: int = 4096,
        cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.keys = keys
        self._cache: OrderedDict[str, tuple[SubjectKey, float]] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()  # key ids known to be deleted
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()

    def seal(self, tx: Transaction | None, subject: str, plaintext: str, bound: str) -> str:
        """The token of ``plaintext``, bound to ``bound`` (say, event id and field)."""
        if not isinstance(subject, str) or not subject:
            raise SerializationError(
                f"personal data of {bound} names no subject (got {subject!r}): its subject "
                "field must hold the subject's id"
            )
        aesgcm, _ = _crypto()
        key = self._key_for_writing(tx, subject)
        nonce = self._random(NONCE_BYTES)
        sealed = aesgcm(key.key).encrypt(nonce, plaintext.encode(), bound.encode())
        return f"{PREFIX}{key.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, subject: str, value: str, bound: str) -> str:
        """The plaintext of a token, ``REDACTED`` if its key is gone, or ``value`` itself
        when it is no token (stored before the field was marked personal)."""
        if not value.startswith(PREFIX):
            return value
        aesgcm, invalid_tag = _crypto()
        key_id, _, body = value[len(PREFIX) :].partition(":")
        key = self._key_for_reading(subject, key_id)
        if key is None:
            return REDACTED
        try:
            raw = base64.urlsafe_b64decode(body)
            plain: bytes = aesgcm(key.key).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound.encode()
            )
            return plain.decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(
                f"personal data of {bound} does not decrypt with the key of subject "
                f"{subject!r}: the row was altered, or the value was copied from another row"
            ) from exc
        except invalid_tag as exc:
            raise DecodeError(
                f"personal data of {bound} fails its integrity check with the key of subject "
                f"{subject!r}: the row was altered, or the value was copied from another row"
            ) from exc

    def forget(self, subject: str) -> bool:
        """Delete the subject's key for good; False when it had none."""
        gone = self.keys.forget(subject)
        with self._lock:
            self._cache.pop(subject, None)
        return gone

    def _key_for_writing(self, tx: Transaction | None, subject: str) -> SubjectKey:
        if tx is None:
            raise SerializationError(
                f"personal data of subject {subject!r} is sealed only inside a transaction "
                "(a unit of work), where its key is read or created"
            )
        key = self.keys.find(subject, tx)
        if key is None:
            fresh = SubjectKey(subject, self._random(8).hex(), self._random(KEY_BYTES))
            key = self.keys.create(tx, fresh)
        return key

    def _key_for_reading(self, subject: str, key_id: str) -> SubjectKey | None:
        now = self._clock()
        with self._lock:
            if key_id in self._gone:
                return None
            cached = self._cache.get(subject)
            if cached is not None and cached[1] > now and cached[0].key_id == key_id:
                self._cache.move_to_end(subject)
                return cached[0]
        key = self.keys.find(subject)  # a miss, stale, or another key id: ask the store
        with self._lock:
            if key is not None:
                _remember(self._cache, subject, (key, now + self._cache_ttl), self._cache_size)
            if key is None or key.key_id != key_id:
                # The token's row committed with its key, so a key that is not there now
                # was deleted: that id is gone for good, and cheap to remember.
                _remember(self._gone, key_id, None, self._cache_size)
                return None
        return key


def _remember(cache: OrderedDict[str, Any], name: str, value: Any, size: int) -> None:
    cache[name] = value
    cache.move_to_end(name)
    while len(cache) > size:
        cache.popitem(last=False)

"""DomainEvent: an immutable fact that an aggregate recorded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import ClassVar, Self

from tidings.domain._fast import set_envelope

UNSET_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""occurred_at of an event that no aggregate has stamped yet."""

ENVELOPE_FIELDS = frozenset({"event_id", "occurred_at", "aggregate_id", "aggregate_version"})


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base of every domain event: a frozen dataclass whose own fields are the payload.

    Subclasses declare their payload as dataclass fields and may set ``event_type`` (the
    stable name stored with the event; the class name by default) and ``schema_version``.
    The four envelope fields below are stamped by ``Aggregate.record``, which takes the
    clock and id source it was given, so the domain never reads the clock by itself.
    They are not ``__init__`` parameters: an event is built from its payload alone, and
    until it is recorded it reads the class defaults (no id, version 0). ``stamped``
    gives a copy with an envelope of your choosing (tests, imports).
    ``personal_data`` marks fields that are a subject's personal data (see
    ``tidings.domain.personal``): they are stored encrypted and can be forgotten.
    """

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    personal_data: ClassVar[Mapping[str, str]] = {}

    # init=False: the generated __init__ of every event would otherwise set all four to
    # their defaults, each through the frozen dataclass's object.__setattr__, only for
    # record() to stamp them again; that was 6k of the 14k instructions it takes to build
    # a three-field event. Unset, they are read from these class attributes.
    event_id: str = field(default="", init=False)
    occurred_at: datetime = field(default=UNSET_TIME, init=False)
    aggregate_id: str = field(default="", init=False)
    aggregate_version: int = field(default=0, init=False)

    @classmethod
    def type_name(cls) -> str:
        """The name stored with the event: ``event_type`` if set, else the class name."""
        return cls.__dict__.get("event_type") or cls.__name__

    @classmethod
    def payload_fields(cls) -> tuple[str, ...]:
        """Names of the fields that make up the payload (all but the envelope)."""
        return tuple(f.name for f in fields(cls) if f.name not in ENVELOPE_FIELDS)

    def payload(self) -> dict[str, object]:
        """The payload as a dict of field name to value."""
        return {name: getattr(self, name) for name in self.payload_fields()}

    def is_stamped(self) -> bool:
        """True once an aggregate (or a decoder) has given the event its envelope."""
        return bool(self.event_id)

    def stamped(
        self,
        *,
        event_id: str,
        occurred_at: datetime = UNSET_TIME,
        aggregate_id: str,
        aggregate_version: int,
    ) -> Self:
        """A copy of this event with the given envelope, as if recorded or read back:
        for tests that replay stored events, and for imports. The envelope is not an
        ``__init__`` parameter (nor one of ``dataclasses.replace``), so this is the way
        to set it by hand."""
        copy = replace(self)  # the payload, built again through __init__; no envelope
        set_envelope(copy, event_id, occurred_at, aggregate_id, aggregate_version)
        return copy

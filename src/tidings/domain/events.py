"""DomainEvent: an immutable fact that an aggregate recorded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import ClassVar

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
    ``personal_data`` marks fields that are a subject's personal data (see
    ``tidings.domain.personal``): they are stored encrypted and can be forgotten.
    """

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    personal_data: ClassVar[Mapping[str, str]] = {}

    event_id: str = ""
    occurred_at: datetime = UNSET_TIME
    aggregate_id: str = ""
    aggregate_version: int = 0

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


def stamp(
    event: DomainEvent,
    *,
    event_id: str,
    occurred_at: datetime,
    aggregate_id: str,
    aggregate_version: int,
) -> None:
    """Set the envelope of an event that nobody else holds yet.

    Only for an instance just built by ``Aggregate.record`` or by a decoder: frozen
    dataclasses are immutable to their users, and this keeps them so while sparing a
    second construction of every event on the hot read path.
    """
    setter = object.__setattr__
    setter(event, "event_id", event_id)
    setter(event, "occurred_at", occurred_at)
    setter(event, "aggregate_id", aggregate_id)
    setter(event, "aggregate_version", aggregate_version)

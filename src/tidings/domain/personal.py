"""Personal data: which fields of an event (or snapshot state) belong to which subject.

A class declares them in one explicit mapping, field -> the field that names the data's
subject (the person it is about)::

    @dataclass(frozen=True, kw_only=True)
    class CustomerRegistered(DomainEvent):
        personal_data = {"email": "customer_id", "name": "customer_id"}

        customer_id: str
        email: str
        name: str | None = None

The codec encrypts those fields with the subject's own key before they are stored; once
the subject is forgotten (its key deleted) they read back as ``REDACTED``. That is why a
personal field must be able to hold a string: its type is ``str`` or ``str | None``. The
subject field is a ``str`` field of the same class, or ``aggregate_id`` for an aggregate
that is itself the subject (a Customer).
"""

from __future__ import annotations

REDACTED = "[REDACTED]"
"""What a personal field reads back as once its subject has been forgotten."""

AGGREGATE_SUBJECT = "aggregate_id"
"""The subject field that names the event's own aggregate as the subject."""

"""Correlation and causation: which conversation a message belongs to, and what caused it.

Every event and message carries, in its metadata (and on the wire, as the CloudEvents
extensions ``correlationid`` and ``causationid``):

- ``correlation_id``: the id of the first command of the conversation, the same on
  everything that follows from it, across services;
- ``causation_id``: the id of the message that caused this one (for the first command's
  own events, the command's id).

A unit of work opened while a message is handled (an inbox handler's, a bus handler's,
one your handler opens itself) takes both from that message, and its W3C trace context
(``traceparent``, ``tracestate``) too. One opened with no message behind it starts a new
conversation, unless you give the ids (``store.unit_of_work(correlation_id=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidings.domain.ids import uuid7

CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
TRACE_KEYS = ("traceparent", "tracestate")

_decode = msgspec.json.Decoder(dict[str, Any]).decode


class _Inherited(msgspec.Struct):
    """The metadata keys a cause takes (other keys are skipped, not decoded)."""

    correlation_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


_decode_inherited = msgspec.json.Decoder(_Inherited).decode


@dataclass(frozen=True, slots=True)
class Cause:
    """What a unit of work inherits from the message being handled."""

    correlation_id: str
    causation_id: str
    trace: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, message_id: str, metadata: bytes) -> Cause:
        """The cause a message (its id and stored metadata) hands to what it causes: its
        conversation (itself, when it carries none) and itself as the cause."""
        if metadata in (b"", b"{}"):
            return cls(message_id, message_id, {})
        try:  # the usual metadata, read into three fields: a consumer does this per message
            known = _decode_inherited(metadata)
        except msgspec.ValidationError:  # a key of another type: each one on its own
            return cls._of_odd(message_id, metadata)
        except msgspec.DecodeError:
            return cls(message_id, message_id, {})
        trace = {}
        if known.traceparent is not None:
            trace["traceparent"] = known.traceparent
        if known.tracestate is not None:
            trace["tracestate"] = known.tracestate
        correlation = known.correlation_id
        return cls(message_id if correlation is None else correlation, message_id, trace)

    @classmethod
    def _of_odd(cls, message_id: str, metadata: bytes) -> Cause:
        """``of`` for metadata whose keys are not all text: those that are count."""
        try:
            values = _decode(metadata)
        except (msgspec.DecodeError, msgspec.ValidationError):
            values = {}
        correlation = values.get(CORRELATION_ID)
        trace = {key: values[key] for key in TRACE_KEYS if isinstance(values.get(key), str)}
        return cls(correlation if isinstance(correlation, str) else message_id, message_id, trace)

    @classmethod
    def first(cls) -> Cause:
        """A new conversation: a command with no message behind it."""
        command_id = uuid7()
        return cls(command_id, command_id)

    def metadata(self) -> dict[str, str]:
        """The metadata keys this cause puts on every event it causes."""
        return {CORRELATION_ID: self.correlation_id, CAUSATION_ID: self.causation_id, **self.trace}


_current: ContextVar[Cause | None] = ContextVar("tidings_cause", default=None)


def current_cause() -> Cause | None:
    """The cause of the message being handled in this context, if any."""
    return _current.get()


class handling:  # noqa: N801 - used as a function: ``with handling(cause):``
    """Make ``cause`` the current one for the block (a handler's run). A class, not a
    generator: a consumer enters one for every handler of every message."""

    __slots__ = ("cause", "token")

    def __init__(self, cause: Cause) -> None:
        self.cause = cause

    def __enter__(self) -> None:
        self.token = _current.set(self.cause)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self.token)

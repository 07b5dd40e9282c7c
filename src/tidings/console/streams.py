"""The streams page's reads: an aggregate's events a page at a time, now or as they were
at a chosen time (the temporal query of ``EventStore.stream_info`` and ``read_stream``
with ``as_of``).

The page shows the stream's prefix up to that time and its version then; the state those
events fold to, with the classes of ``--aggregates``, is ``states.fold``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from tidings.errors import ConfigurationError
from tidings.ports import EventStore
from tidings.records import EventRecord, StreamInfo

PAGE = 50


@dataclass(frozen=True)
class StreamPage:
    """One page of a stream's events (``start`` to ``start + PAGE - 1``), with the
    stream now and, given a time, as it was then."""

    now: StreamInfo
    then: StreamInfo | None
    events: list[EventRecord]
    start: int

    @property
    def version(self) -> int:
        """The version the page is read up to: then's, or now's."""
        return (self.then or self.now).version

    @property
    def earlier(self) -> int | None:
        """The first version of the page before this one, if any."""
        return max(self.start - PAGE, 1) if self.start > 1 else None

    @property
    def later(self) -> int | None:
        """The first version of the page after this one, if any."""
        after = self.start + PAGE
        return after if after <= self.version else None


def moment(text: str) -> datetime | None:
    """The time an operator typed (ISO 8601 with a zone), or None when empty; a clear
    ``ConfigurationError`` when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"the time {text!r} is not one this page reads: write it in ISO 8601 with a "
            "zone, for example 2026-01-10T14:30:00+00:00 (or ...Z for UTC)"
        ) from None
    if found.tzinfo is None or found.utcoffset() is None:
        raise ConfigurationError(
            f"the time {text!r} has no zone, so it could be any of 24 instants: add one, "
            f"for example {text}+00:00 (or Z for UTC)"
        )
    return found


def first_version(text: str) -> int:
    """The page's first version from the query string (1 when absent)."""
    try:
        start = int(text or "1")
    except ValueError:
        raise ConfigurationError(f"'from' is a version number, not {text!r}") from None
    return max(start, 1)


def read(store: EventStore, stream_id: str, as_of: datetime | None, start: int) -> StreamPage:
    """A page of ``stream_id`` from ``start`` (up to ``as_of`` if given); an unknown
    stream, or one with no events yet at ``as_of``, is a ``ConfigurationError`` that
    says so."""
    now = store.stream_info(stream_id)
    if not now.exists:
        raise ConfigurationError(
            f"no stream has id {stream_id!r} here: check the id (an aggregate's id, as in "
            "an event's 'subject'), or look an event up to find its stream"
        )
    then = None
    if as_of is not None:
        then = store.stream_info(stream_id, as_of)
        if not then.exists:
            first = now.first_occurred_at.isoformat() if now.first_occurred_at else "?"
            raise ConfigurationError(
                f"stream {stream_id!r} had no events yet at {as_of.isoformat()}: its first "
                f"event occurred at {first}; pick a later time"
            )
    last = (then or now).version
    found = store.read_stream(stream_id, start, min(start + PAGE - 1, last), as_of=as_of)
    return StreamPage(now, then, list(islice(found, PAGE)), start)

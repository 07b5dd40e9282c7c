"""Where one event is, as a database holds it: written (stream, position, time), its
outbox row (published when, attempts, dead letter), and the consumer's side (which
handlers processed it, when, after how many attempts; dead letters). ``tidings trace``
shows it for every database it is given (docs/tracing.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tidings.errors import ConfigurationError, StorageError
from tidings.serialization.cloudevents import MAX_KEY_CHARACTERS

_CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}


@dataclass(frozen=True)
class Written:
    """The event in the event log."""

    stream_id: str
    version: int
    position: int
    event_type: str
    occurred_at: str
    recorded_at: str
    correlation_id: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class Outgoing:
    """The event's outbox row (or, given up on, its dead letter)."""

    published: bool
    published_at: str | None
    attempts: int
    last_error: str | None
    dead_at: str | None = None


@dataclass(frozen=True)
class Handled:
    """One handler's inbox row of the event (``handler`` ``*``: the message was bad)."""

    handler: str
    status: str  # processed, processing, failed, or dead (a dead letter)
    attempts: int
    at: str | None
    error: str | None = None


@dataclass(frozen=True)
class Trail:
    """What one database knows of the event; ``missing`` names its absent tidings parts."""

    database: str
    written: Written | None = None
    outbox: Outgoing | None = None
    handled: list[Handled] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """True when this database has any trace of the event."""
        return bool(self.written or self.outbox or self.handled)


def check_event_id(event_id: str) -> str:
    """Return the id, or raise ``ConfigurationError`` saying why it cannot be one."""
    if not event_id.strip():
        raise ConfigurationError("the event id is empty: give the id of an event (a UUID)")
    if len(event_id) > MAX_KEY_CHARACTERS:
        raise ConfigurationError(
            f"the event id is {len(event_id)} characters long; event ids are at most "
            f"{MAX_KEY_CHARACTERS}: check what was pasted"
        )
    if _CONTROL & set(event_id) or event_id != event_id.strip():
        raise ConfigurationError(
            f"the event id {event_id!r} begins or ends with spaces or holds control "
            "characters, which no event id does: copy it again from the log line or the "
            "message's 'id'"
        )
    return event_id


def follow(store: Any, event_id: str) -> Trail:
    """What ``store``'s database knows of the event (read only)."""
    tables = store.database.tables
    parts = _parts(store, tables)
    trail = Trail(store.database.describe(), missing=[p for p in _WANTED if p not in parts])
    with store.unit_of_work() as uow:
        if "core" in parts:
            trail = _with_written(trail, uow, tables, event_id)
        if "outbox" in parts:
            trail = _with_outbox(trail, uow, tables, event_id)
        if "inbox" in parts:
            trail.handled.extend(_handled(uow, tables, event_id))
    return trail


_WANTED = ("core", "outbox", "inbox")


def _parts(store: Any, tables: dict[str, str]) -> set[str]:
    """The tidings parts this database has tables of (none if it has no tidings tables)."""
    try:
        with store.unit_of_work() as uow:
            rows = uow.execute(f"SELECT component FROM {tables['schema_version']}").fetchall()
    except StorageError:
        return set()
    return {row[0] for row in rows}


def _with_written(trail: Trail, uow: Any, tables: dict[str, str], event_id: str) -> Trail:
    row = uow.execute(
        "SELECT stream_id, version, position, event_type, occurred_at, recorded_at, metadata "
        f"FROM {tables['events']} WHERE event_id = :id",
        {"id": event_id},
    ).fetchone()
    if row is None:
        return trail
    metadata = row[6] if isinstance(row[6], dict) else json.loads(row[6] or "{}")
    written = Written(
        row[0],
        int(row[1]),
        int(row[2]),
        row[3],
        _text(row[4]) or "",
        _text(row[5]) or "",
        metadata.get("correlation_id"),
        metadata.get("traceparent"),
    )
    return Trail(trail.database, written, trail.outbox, trail.handled, trail.missing)


def _with_outbox(trail: Trail, uow: Any, tables: dict[str, str], event_id: str) -> Trail:
    row = uow.execute(
        "SELECT published, published_at, retry_count, last_error "
        f"FROM {tables['outbox']} WHERE event_id = :id",
        {"id": event_id},
    ).fetchone()
    if row is not None:
        outgoing = Outgoing(bool(row[0]), _text(row[1]), int(row[2]), row[3])
    else:
        row = uow.execute(
            f"SELECT retry_count, last_error, dead_at FROM {tables['outbox_dead_letters']} "
            "WHERE event_id = :id",
            {"id": event_id},
        ).fetchone()
        if row is None:
            return trail
        outgoing = Outgoing(False, None, int(row[0]), row[1], _text(row[2]))
    return Trail(trail.database, trail.written, outgoing, trail.handled, trail.missing)


def _handled(uow: Any, tables: dict[str, str], event_id: str) -> list[Handled]:
    rows = uow.execute(
        "SELECT handler_name, status, attempts, COALESCE(processed_at, created_at), "
        f"error_message FROM {tables['inbox']} WHERE event_id = :id ORDER BY handler_name",
        {"id": event_id},
    ).fetchall()
    found = [Handled(r[0], r[1], int(r[2]), _text(r[3]), r[4]) for r in rows]
    dead = uow.execute(
        f"SELECT handler_name, attempts, dead_at, reason FROM {tables['inbox_dead_letters']} "
        "WHERE event_id = :id ORDER BY id",
        {"id": event_id},
    ).fetchall()
    return found + [Handled(r[0], "dead", int(r[1]), _text(r[2]), r[3]) for r in dead]


def _text(value: Any) -> str | None:
    """A time as text (SQLite keeps text, PostgreSQL gives datetimes)."""
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)

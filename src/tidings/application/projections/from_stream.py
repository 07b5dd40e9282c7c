"""Projections fed by a broker stream: another service's events, through the inbox.

A state-based service, or a read model in another service's database (the spec's
pattern 2), has no event log of the writer's to read. Its events arrive through a
consumer, and ``projection_handlers`` turns a ``Projection`` into the consumer's
handlers: the inbox drops duplicates, the consumer keeps each aggregate's order, and the
projection's handler, the inbox row and the checkpoint of the message's source commit in
the consumer's batch transaction. A message delivered again finds its inbox row and
changes nothing.

The checkpoint is per source service: the highest position of the source's log applied
(the relay sends it as the CloudEvents extension ``tidingsposition``), the time in the
last message and when it was applied. Messages of different aggregates travel out of
the source's order, so each position applied is kept as well: a reader waiting for
service A's write (``wait_for_source``, with A's token ``"<source>:<position>"``) waits
for that position itself, not for anything higher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.application.handling import Handlers, handled_record
from tidings.application.projections.definition import Projection
from tidings.application.projections.waiting import FIRST_LOOK, STREAM, ReadCheckpoint
from tidings.domain.events import DomainEvent
from tidings.domain.projection_sources import SourceCheckpoint
from tidings.errors import ProjectionError, ProjectionTimeoutError
from tidings.ports import ProjectionCheckpoints, SourceCheckpoints, SourcePositions
from tidings.serialization.cloudevents import POSITION_ATTRIBUTE, POSITION_KEY

HANDLER_PREFIX = "projection:"
"""Its inbox handler's name is this and the projection's name."""

_metadata = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True)
class SourceToken:
    """A consistency token that names its source: position ``position`` of the log of
    the service whose CloudEvents ``source`` is ``source``. Written ``"orders:57"``."""

    source: str
    position: int

    def __str__(self) -> str:
        return f"{self.source}:{self.position}"

    @classmethod
    def parse(cls, token: str | SourceToken) -> SourceToken:
        """The token written ``"<source>:<position>"``, or a ``ProjectionError`` saying
        what a token looks like."""
        if isinstance(token, SourceToken):
            return token
        source, _, digits = str(token).rpartition(":")
        if not source or not (digits.isascii() and digits.isdigit()):
            raise ProjectionError(
                f"{token!r} is not a consistency token of another service: write it "
                "'<source>:<position>' (the writer's tidings.connect(source=...) and its "
                "uow.position, as source_token gives it), e.g. 'orders:57'"
            )
        return cls(source, int(digits))


def source_token(store: Any, position: int | None) -> str | None:
    """The token a reader in another service waits on: this store's source and a unit
    of work's ``position`` (None when it wrote no event)."""
    return None if position is None else str(SourceToken(store.source, position))


def stream_handlers(
    store: Any,
    projections: Projection | Iterable[Projection],
    handlers: Handlers | None,
    *,
    checkpoints: ProjectionCheckpoints,
    sources: SourceCheckpoints,
    clock: Callable[[], float] = time.time,
) -> Handlers:
    """Consumer handlers that apply ``projections`` to the events a broker delivers,
    added to ``handlers`` when given (``store.projection_handlers`` gives the adapters).
    Each projection's tables are made now, once, as a runner makes them; a stored
    version other than the code's is refused."""
    chosen = [projections] if isinstance(projections, Projection) else list(projections)
    handlers = handlers if handlers is not None else Handlers()
    for projection in chosen:
        if not isinstance(projection, Projection):
            raise ProjectionError(f"{projection!r} is not a tidings Projection")
        store.registry.register(*projection.handlers)
        _make_tables(store, projection, checkpoints)
        apply = _applier(store, projection, sources, clock)
        handlers.add(DomainEvent, HANDLER_PREFIX + projection.name, apply)
    return handlers


def _make_tables(store: Any, projection: Projection, checkpoints: ProjectionCheckpoints) -> None:
    """Its tables and its row in the checkpoints table (state ``stream``), once."""
    p = projection
    with store.unit_of_work() as uow:
        found = checkpoints.get(uow, p.name)
        if found is None:
            for statement in (*p.schema, *p.indexes):
                uow.execute(statement)
            checkpoints.ensure(uow, p.name, p.version, p.lag_threshold)
            checkpoints.beat(uow, [p.name], 0.0, "", STREAM)
            found = checkpoints.get(uow, p.name)
    assert found is not None  # noqa: S101 - made above, in the same transaction
    if found.state != STREAM:
        raise ProjectionError(
            f"projection {p.name!r} is {found.state} here, built from this store's own log "
            "by a runner: give the projection fed by the broker another name"
        )
    if found.version != p.version:
        raise ProjectionError(
            f"projection {p.name!r} was built by version {found.version} and the code is "
            f"version {p.version}: a projection fed by a broker has no log here to be rebuilt "
            "from; build the new version under a new name from a replay of the stream "
            "(docs/cqrs.md, pattern 2)"
        )


def _applier(
    store: Any, projection: Projection, checkpoints: SourceCheckpoints, clock: Callable[[], float]
) -> Callable[[DomainEvent, Any], None]:
    """The inbox handler of one projection: its own handler of the event's class (none:
    the event passes by), then the move of the source's checkpoint, in the consumer's
    transaction; waiters in this process are woken once it commits."""
    name = projection.name
    progress = store.projection_progress

    def apply(event: DomainEvent, uow: Any) -> None:
        handler = projection.handlers.get(type(event))
        if handler is not None:
            handler(uow, event)
        record = handled_record()
        if record is None:  # called by hand, not by a consumer: nothing to checkpoint
            return
        source, position = _origin(record.metadata)
        checkpoints.applied(
            uow,
            name,
            source=source,
            position=position,
            event_time=record.occurred_at.timestamp(),
            now=clock(),
        )
        uow.transaction.on_commit(progress.moved)

    return apply


def _origin(metadata: bytes) -> tuple[str, int | None]:
    """The source and log position a received record's metadata names."""
    try:
        values = _metadata.decode(metadata) if metadata not in (b"", b"{}") else {}
    except (msgspec.DecodeError, msgspec.ValidationError):
        values = {}
    source = values.get("source")
    position = values.get(POSITION_KEY)
    return (
        source if isinstance(source, str) else "",
        position if isinstance(position, int) and position > 0 else None,
    )


@dataclass(frozen=True)
class SourceStatus:
    """The figures of a stream projection on one source at one moment.

    ``position`` is the highest source position applied (None: unknown, no message
    carried one). ``lag_seconds`` is how old the last message applied was when it was
    applied (its time against the apply; the source's head is not known here), and
    ``idle_seconds`` how long ago that was."""

    name: str
    source: str
    position: int | None
    events: int
    lag_seconds: float
    idle_seconds: float
    positioned: bool

    def describe(self) -> str:
        """One line for a terminal or a log."""
        where = (
            f"position {self.position}"
            if self.position is not None
            else f"position unknown (its messages carry no {POSITION_ATTRIBUTE})"
        )
        line = (
            f"{self.name} <- {self.source or '(no source)'}  stream  {where}  lag "
            f"{self.lag_seconds:.1f} s at the last apply, {self.idle_seconds:.1f} s ago  "
            f"{self.events} events"
        )
        if self.position is not None and not self.positioned:
            line += f"  (the last message carried no {POSITION_ATTRIBUTE})"
        return line


def status_of(c: SourceCheckpoint, now: float) -> SourceStatus:
    """The figures of one stream projection's checkpoint on one source, at ``now``."""
    return SourceStatus(
        name=c.name,
        source=c.source,
        position=c.position or None,
        events=c.events,
        lag_seconds=max(c.applied_at - c.event_time, 0.0),
        idle_seconds=max(now - c.applied_at, 0.0),
        positioned=c.positioned,
    )


def wait_for_source(
    store: Any,
    token: str | SourceToken,
    projection: str,
    timeout: float,
    *,
    read_local: ReadCheckpoint,
    reader: SourcePositions,
    poll: float = 0.1,
) -> int:
    """Block until stream projection ``projection`` has applied the source position
    ``token`` names; return the highest position it holds of that source. A token of
    this store's own source, for a projection of its own log, is waited for as a local
    one. Raise ``ProjectionTimeoutError`` naming how far it is after ``timeout`` s."""
    wanted = SourceToken.parse(token)
    if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
        raise ProjectionError(f"timeout is in seconds and must be above 0 (got {timeout!r})")
    local = read_local(projection)
    if local is not None and local.state != STREAM:
        if wanted.source == store.source:
            return int(store.wait_for(wanted.position, projection, timeout))
        raise ProjectionError(
            f"projection {projection} reads this store's own log (source "
            f"{store.source!r}), and the token {str(wanted)!r} names source "
            f"{wanted.source!r}: wait on the projection this service feeds from "
            f"{wanted.source}'s stream, or pass this store's own token"
        )
    if wanted.position == 0:
        return 0
    progress = store.projection_progress
    deadline = time.monotonic() + timeout
    pause = FIRST_LOOK
    while True:
        seen = progress.moves  # before the look: a move after it is not missed
        if reader.has_applied(projection, wanted.source, wanted.position):
            return _highest(reader.listing(projection), wanted.source)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(reader.listing(projection), projection, wanted, timeout, local)
        progress.wait(seen, min(left, pause))
        pause = min(pause * 2, poll)


def _highest(found: list[SourceCheckpoint], source: str) -> int:
    return max((c.position for c in found if c.source == source), default=0)


def _timed_out(
    found: list[SourceCheckpoint],
    projection: str,
    token: SourceToken,
    timeout: float,
    local: Any,
) -> ProjectionTimeoutError:
    """The error of a wait that ran out, saying where the projection stands on the
    token's source and why it may not get there."""
    head = f"projection {projection} has not applied {token} within {timeout:g} s"
    mine = [c for c in found if c.source == token.source]
    if local is None:
        why = (
            "it is not a projection of this database: check the name, and start its "
            "consumer (projection_handlers, docs/cqrs.md)"
        )
        state, position = "missing", 0
    elif not mine:
        others = ", ".join(sorted(c.source or "(no source)" for c in found))
        why = (
            f"it has applied nothing from source {token.source!r}"
            + (f"; it is fed by {others}" if others else "; it has applied nothing yet")
            + ": check the token's source, and that its consumer runs and is subscribed "
            "to that source's events"
        )
        state, position = STREAM, 0
    else:
        c = mine[0]
        state, position = STREAM, c.position
        if not c.position:
            why = (
                f"its messages from {token.source} carry no {POSITION_ATTRIBUTE} (a producer "
                "that does not send it), so no position can be waited for: its lag is unknown"
            )
        else:
            why = (
                f"its highest position from {token.source} is {c.position} (its last message "
                f"was {max(c.applied_at - c.event_time, 0.0):.1f} s old when applied, "
                f"{max(time.time() - c.applied_at, 0.0):.1f} s ago); the event at "
                f"{token.position} has not arrived yet, or is not routed to its consumer"
            )
    return ProjectionTimeoutError(
        f"{head}: {why}",
        projection=projection,
        token=token.position,
        position=position,
        state=state,
    )

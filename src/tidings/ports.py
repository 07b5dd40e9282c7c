"""The ports: small Protocols the application layer uses and adapters implement.

A port never imports an adapter, and an adapter (or a test fake) satisfies a port by
shape, without inheriting from it. Each port is one capability; a backend implements
the ones it supports.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tidings.domain._fast import frozen_builder
from tidings.domain.events import DomainEvent
from tidings.domain.projection_sources import SourceCheckpoint
from tidings.domain.projection_state import Checkpoint, LogHead, Skip
from tidings.domain.saga_state import SagaRow, Transition
from tidings.records import EventRecord, SnapshotRecord, StreamInfo, SubjectKey

ANY_VERSION = -1
"""``expected_version`` that skips the concurrency check."""

NO_STREAM = 0
"""``expected_version`` of a stream that must not exist yet."""

Params = Sequence[Any] | Mapping[str, Any]


class Transaction(Protocol):
    """One open database transaction, handed to every writer so that they commit together."""

    @property
    def connection(self) -> Any:
        """The driver's own connection (``sqlite3.Connection``, ``psycopg.Connection``)."""

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement in this transaction; driver errors arrive as ``StorageError``."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back)."""

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: when its block raises, only its own writes (and commit
        callbacks) are undone, and the outer transaction goes on."""

    def pipeline(self) -> AbstractContextManager[None]:
        """A block whose statements may be sent without waiting for each result (where
        the backend can: PostgreSQL's pipeline mode). Results are waited for when read;
        a failing statement's error may surface later in the block, or when it ends."""

    def last_statement(self) -> bool:
        """The caller's next statement is the transaction's only one, and its owner commits
        right after it: True if the backend will run that statement as a transaction of
        its own (PostgreSQL: one round trip instead of BEGIN, statement, COMMIT), so the
        statement must be all-or-nothing by itself. False when statements ran already,
        or where nothing is gained (SQLite, memory); then nothing changes."""


class Database(Protocol):
    """A database that opens transactions and owns the tables tidings needs."""

    dialect: str

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Open a write transaction: commit on a clean exit, roll back on an exception."""

    def create_schema(self) -> None:
        """Create the tables if they are missing (idempotent, versioned)."""

    def describe(self) -> str:
        """Say which database this is, for messages (never includes a password)."""

    def close(self) -> None:
        """Release connections."""


class EventStore(Protocol):
    """The append-only log of events: streams with versions, and one global order."""

    def append(
        self,
        tx: Transaction,
        records: Sequence[EventRecord],
        expected_version: int,
        *,
        last: bool = False,
    ) -> list[EventRecord]:
        """Append records of one stream at ``expected_version`` + 1, ..., inside ``tx``.

        Raises ``ConcurrencyError`` (writing nothing) when the stream is not at
        ``expected_version``. Returns the records with their global positions. ``last``
        says that the caller runs nothing else in ``tx`` and commits it next (see
        ``Transaction.last_statement``).
        """

    def stream_version(self, stream_id: str, tx: Transaction | None = None) -> int:
        """The version of a stream's last event (0 when there is none): committed, or as
        ``tx`` sees it (its own writes included)."""

    def stream_info(self, stream_id: str, as_of: datetime | None = None) -> StreamInfo:
        """The stream's version and the times of its first and last events.

        With ``as_of``, the stream as it was then: only its events before the first one
        that occurred after ``as_of`` count (a prefix, even if clocks went backwards).
        """

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        as_of: datetime | None = None,
    ) -> Iterator[EventRecord]:
        """Committed records of one stream from ``from_version`` to ``to_version``
        (inclusive; the end when None), in version order, fetched a page at a time.

        With ``as_of``, the reading stops before the first event that occurred after it,
        the same prefix ``stream_info(stream_id, as_of)`` describes.
        """

    def count(self) -> int:
        """How many events the log holds (committed)."""

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Up to ``limit`` committed records after ``after_position``, in position order.

        A page may be short, or empty, while a gap in positions may still fill
        (PostgreSQL: while a transaction older than the gap's writer still runs on the
        server); reading again from the same position gives the rest once it is decided.
        ``iter_log`` in ``tidings.application`` does that for you.
        """


class SnapshotStore(Protocol):
    """Snapshots of aggregate state, written in the transaction that saves the events."""

    def save(self, tx: Transaction, snapshot: SnapshotRecord) -> None:
        """Write ``snapshot`` inside ``tx``, replacing one of the same stream and version."""

    def load_latest(
        self,
        stream_id: str,
        aggregate_type: str,
        snapshot_version: int,
        max_version: int | None = None,
    ) -> SnapshotRecord | None:
        """The newest snapshot of a stream written by ``aggregate_type`` in the shape
        ``snapshot_version``, at or below ``max_version`` (None: any); None if there is none."""


class KeyStore(Protocol):
    """The subjects' data keys (crypto-shredding): one key per subject, deleted to forget."""

    def find(self, subject: str, tx: Transaction | None = None) -> SubjectKey | None:
        """The subject's key (committed, or as ``tx`` sees it), or None."""

    def create(self, tx: Transaction, key: SubjectKey) -> SubjectKey:
        """Store ``key`` in ``tx`` unless its subject has a key already; return the key the
        subject has now (a concurrent writer's may have won)."""

    def forget(self, subject: str) -> bool:
        """Delete the subject's key for good, in a transaction of its own, leaving no copy
        the backend can avoid; False when it had none."""

    def all_keys(self) -> Iterator[SubjectKey]:
        """Every key, a page at a time (to copy a store's events with their keys)."""


class EventWriter(Protocol):
    """Something else that writes recorded events in the unit of work's transaction."""

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Write ``records`` inside ``tx`` (for example as outbox rows)."""


class Publisher(Protocol):
    """Where events go once their transaction committed (the in-memory bus, for one)."""

    def publish(self, events: Sequence[DomainEvent]) -> Sequence[object]:
        """Hand events to their handlers; return what failed (never raise for a handler)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One event on its way to a broker.

    ``body`` is the CloudEvents 1.0 JSON document; ``message_id`` is the event id (brokers
    that deduplicate, like NATS JetStream, use it); ``routing_key`` comes from the event
    type (the RabbitMQ routing key, the last tokens of a NATS subject); ``ordering_key``
    is the aggregate id, the unit whose order must hold.
    """

    message_id: str
    routing_key: str
    ordering_key: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """Publishes messages to a broker and waits for the broker to take responsibility.

    The broker's answer to each message is one of three kinds, and the transport keeps
    them apart, because only a refusal counts against the message:

    - **confirmed**: the broker has the message (a duplicate it dropped counts too);
    - **refused**, permanent: the broker answered that it will not take *this* message
      (unroutable or returned, too large, rejected by a limit, a JetStream API error about
      the message). Sending it again as it is would be refused again; the relay counts an
      attempt and, after its ``max_attempts``, dead-letters the event;
    - **no answer**, transient: nothing came within the timeout, the broker said it cannot
      answer now (NATS 503 "no responders", a JetStream 503), or the connection was lost.
      That says nothing about the message: it is an outage, waited out for as long as it
      lasts (the relay backs off and publishes it again), never an attempt.
    """

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish ``messages``; return, per message, None once the broker confirmed it, or
        the reason it refused it.

        Raise ``BrokerUnavailableError`` when the broker cannot be reached, and
        ``BrokerBusyError`` (a subclass) when any message got no answer: the error's
        ``answered`` maps the index of each message that *was* answered to None or its
        refusal, so they need not be sent again; the others may or may not have arrived.
        Raise another ``TransportError`` when the broker refused the whole call (a topology
        conflict, say); then nothing may be assumed published. The next call reconnects."""

    def close(self) -> None:
        """Release the connection."""


class HeldBack:
    """The answer ``WavePublisher.publish_waves`` gives a message it did not send: an
    earlier message of its aggregate in the call was refused. Not an attempt: the relay
    sends it again once the refused one is settled."""

    def __repr__(self) -> str:
        return "HELD_BACK"


HELD_BACK = HeldBack()


class WavePublisher(Protocol):
    """A transport that publishes several waves in one call (NATS: on the loop thread that
    holds the connection, where a call per wave costs a thread switch each way).

    Wave k goes out only once every message of wave k - 1 was answered, so the broker
    never holds a later event of an aggregate before an earlier one; a message whose
    ``ordering_key`` had a message refused in an earlier wave of the call is not sent,
    and answered ``HELD_BACK``. The answers come flattened, wave after wave. When any
    message got no answer, nothing more is sent and ``BrokerBusyError`` is raised, its
    ``answered`` indexing the flattened list (held-back and unsent messages are not in
    it), as ``Transport.publish`` does."""

    def publish_waves(
        self, waves: Sequence[Sequence[OutgoingMessage]]
    ) -> list[str | HeldBack | None]:
        """Publish ``waves`` one after another; the answers, flattened."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message delivered by a broker; ``token`` is the transport's handle to settle it.

    ``hold``, when above 0, is the transport's request not to handle the message yet but
    to send it round again after that many seconds (and everything of its aggregate after
    it): earlier messages may still be on their way back from a consumer that died."""

    body: bytes
    message_id: str | None
    delivery_count: int
    token: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: float = 0.0


class Subscription(Protocol):
    """A durable subscription of one consumer: fetch, then settle every message."""

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first."""

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """The messages are done with; the broker forgets them.

        Messages already settled, or fetched on a connection that has since been lost, are
        skipped: the broker delivers the latter again, and the inbox recognises them.
        """

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Deliver ``message`` again after about ``delay`` seconds."""

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """Hand unsettled ``messages`` back at once, to be delivered again before later
        ones and in their order (the consumer's batch failed: a database outage). Best
        effort: what cannot be given back comes again after the broker's own timeout."""

    def close(self) -> None:
        """Release the connection (unsettled messages are delivered again later)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row the relay claimed: the event, its lane and how often it was tried."""

    record: EventRecord
    lane: int
    attempts: int


# OutboxEntry(...) for the claim, which builds one per row (see tidings.domain._fast).
new_entry: Callable[[EventRecord, int, int], OutboxEntry] = frozen_builder(OutboxEntry)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of a claimed batch; the outbox applies it in one fenced transaction."""

    published: Sequence[int] = ()
    retry: Sequence[tuple[int, float, str]] = ()  # (position, next attempt at, error)
    dead: Sequence[tuple[int, str]] = ()  # (position, error)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the relay gave up on, kept with its last error until retried or purged."""

    record: EventRecord
    attempts: int
    error: str
    dead_at: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """How far behind the relay is."""

    backlog: int
    oldest_age_seconds: float
    dead_letters: int


class Outbox(Protocol):
    """The transactional outbox: rows written with the events, claimed and settled by relays.

    Rows are spread over lanes by a hash of the aggregate id; a relay claims only rows of
    lanes it leases (``Leases``, the set ``OUTBOX_LANES``), and ``settle`` checks each
    lease's fencing token in the same transaction, so a relay that lost its lease cannot
    mark anything.
    """

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Add outbox rows for ``records`` inside the unit of work's transaction."""

    def claim(
        self,
        leases: Mapping[int, int],
        lanes: int,
        limit: int,
        now: float,
        skip: Collection[int] = (),
    ) -> list[OutboxEntry]:
        """Due rows of the leased lanes in position order, skipping parked aggregates and
        the rows at the positions in ``skip`` (published, their settle still on its way)."""

    def settle(self, relay_id: str, leases: Mapping[int, int], outcome: Settlement) -> bool:
        """Apply ``outcome`` if every lease still holds; False (and nothing done) if not."""

    def stats(self, now: float) -> OutboxStats:
        """Backlog, age of the oldest unpublished row, dead-letter count."""

    def delete_published(self, older_than_seconds: float, batch: int) -> int:
        """Delete up to ``batch`` published rows older than the retention period."""

    def wait_for_work(self, timeout: float) -> None:
        """Return soon after a new row commits, or after ``timeout`` seconds."""


OUTBOX_LANES = "outbox"
"""The lease set the relays' lanes are leased under (``Leases``)."""

TAKEOVER_CHECK = 0.5
"""Seconds at most between two leases of a worker: each lease also takes over the slots
of owners whose process died (a liveness lock), so this bounds the takeover time."""


def renew_interval(ttl: float) -> float:
    """Seconds until a worker leases again: a third of its ``ttl`` (renewed well before
    it runs out), and no more than ``TAKEOVER_CHECK``, so a dead owner's slots are taken
    over within about that long. A lease is one short transaction: cheap at this rate."""
    return min(ttl / 3, TAKEOVER_CHECK)


class Leases(Protocol):
    """Numbered slots shared fairly among live owners, each slot held by one owner at a
    time under a fencing token: the relay's lanes, and any worker's partitions.

    A set of slots has a ``name`` and a fixed ``count``. Each call of ``lease`` is also
    the owner's heartbeat: shares are computed over the owners seen alive within their
    ``ttl``, so a new owner gets its share as the others give theirs back, and a dead
    owner's slots are taken over once its leases ran out. The token of a slot goes up
    every time it changes owner, so a writer that checks ``holds`` in the transaction of
    its writes can never write for a slot it lost (the fencing token).
    """

    def lease(self, owner: str, name: str, count: int, ttl: float, now: float) -> dict[int, int]:
        """Take ``owner``'s fair share of the ``count`` slots of ``name``: renew what it
        holds until ``now + ttl``, give back what is over its share, take free or expired
        slots up to it. Returns slot -> fencing token of every slot it holds now.

        Raises ``LeaseCountError`` when live owners hold the set with another count."""

    def release(self, owner: str, name: str) -> None:
        """Give back every slot of ``name`` that ``owner`` holds, and leave the owners
        seen alive, so the others take its share at once (on a clean stop)."""

    def holds(self, tx: Transaction, owner: str, name: str, tokens: Mapping[int, int]) -> bool:
        """Inside the caller's transaction: whether ``owner`` still holds every slot of
        ``tokens`` under that token. Until ``tx`` ends, no other owner can take those
        slots over, so writes made in ``tx`` after a True are fenced (a lease that ran
        out but was not taken over still holds: no one else can have written)."""

    def close(self) -> None:
        """Let go of what this component holds for its owners in this process (the locks
        that tell others at once when the process dies)."""


class OutboxDeadLetters(Protocol):
    """Events the relay gave up on; their aggregates stay parked until retried or purged."""

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The dead letters, oldest first."""

    def retry_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back in the outbox (all when ``event_ids`` is None)."""

    def purge_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Delete dead letters for good (all when ``event_ids`` is None)."""


@dataclass(frozen=True, slots=True)
class InboxDeadLetter:
    """A message no handler could take: bad input (``handler`` "*") or a handler that kept
    failing. ``body`` is the message as it arrived."""

    id: int
    event_id: str | None
    handler: str
    event_type: str | None
    body: bytes
    reason: str
    attempts: int
    dead_at: str


class Inbox(Protocol):
    """Which (event, handler) pairs are done; written in the handler's own transaction."""

    def begin(self, tx: Transaction, record: EventRecord, handler: str) -> bool:
        """Mark (event, handler) processed in ``tx``; False when it was processed before."""

    def begin_many(self, tx: Transaction, keys: Sequence[tuple[EventRecord, str]]) -> list[bool]:
        """``begin`` for many (event, handler) pairs at once, in one statement where the
        backend can; per pair, False when it was processed before (or earlier in ``keys``)."""

    def fail(self, tx: Transaction, record: EventRecord, handler: str, error: str) -> int:
        """Record a failed attempt (after the handler's writes were undone); return the
        number of attempts so far."""

    def bury(
        self,
        tx: Transaction,
        body: bytes,
        reason: str,
        *,
        handler: str = "*",
        record: EventRecord | None = None,
        attempts: int = 1,
    ) -> None:
        """Keep a message as a dead letter with the reason it could not be handled."""

    def dead_letters(self, limit: int = 100) -> list[InboxDeadLetter]:
        """Dead letters, oldest first."""

    def remove_dead(
        self, tx: Transaction, ids: Sequence[int] | None = None
    ) -> list[InboxDeadLetter]:
        """Take dead letters out in ``tx`` (all when ``ids`` is None) and return them."""

    def delete_processed(self, older_than_seconds: float, batch: int) -> int:
        """Delete up to ``batch`` processed rows older than the dedup window."""


@dataclass(frozen=True, slots=True)
class InFlightMessage:
    """A message a consumer fetched and has not finished with (handled, found a duplicate
    or buried): its event, and the aggregate version that fixes its place."""

    event_id: str
    stream_id: str
    version: int


class InFlight(Protocol):
    """What each consumer has fetched and not finished, kept where its handlers' writes
    are, so that per-aggregate order survives a crash.

    A consumer killed mid-batch leaves messages the broker delivers again only later
    (after NATS's ``ack_wait``), while its successor already fetches the aggregate's later
    events. The successor finds the earlier ones here and holds the later ones back
    until they are finished.
    """

    def note(
        self, consumer: str, messages: Sequence[InFlightMessage], now: float, stale_after: float
    ) -> list[InFlightMessage]:
        """Record ``messages`` as fetched by ``consumer`` (in a transaction of its own, or
        seen again now) and return every message of their aggregates still in flight for
        ``consumer`` and seen within ``stale_after`` seconds, ``messages`` included."""

    def finish(self, tx: Transaction, consumer: str, event_ids: Sequence[str]) -> None:
        """Forget the messages in ``tx``, the transaction that handled them."""

    def delete_stale(self, consumer: str, older_than: float) -> int:
        """Forget messages of ``consumer`` not seen since ``older_than`` (a time): the broker
        will not deliver them again (a consumer's ``max_deliver``, a deleted queue)."""


class Messages(Protocol):
    """Commands and integration messages beside the outbox: the sequence of each ordering
    key, and messages scheduled for later delivery."""

    def next_versions(self, tx: Transaction, key: str, count: int) -> int:
        """Reserve ``count`` sequence numbers of ``key`` in ``tx``; return the first."""

    def schedule(
        self, tx: Transaction, records: Sequence[EventRecord], due: Sequence[float]
    ) -> None:
        """Keep ``records`` in ``tx`` until their due times (seconds since the epoch)."""

    def release_due(self, now: float, limit: int) -> int:
        """Move up to ``limit`` messages due at ``now`` into the outbox, in a transaction of
        its own, earliest first; return how many moved."""

    def scheduled(self) -> int:
        """How many messages wait for their time."""


class ProjectionCheckpoints(Protocol):
    """Projection checkpoints, each written in the unit of work given, beside the read
    model's rows. Moves are guarded by the position the caller read: a checkpoint another
    runner moved first raises ``ProjectionConflictError`` and the caller's transaction,
    read-model writes included, rolls back."""

    def ensure(self, uow: Any, name: str, version: int, lag_threshold: float) -> Checkpoint:
        """The checkpoint of ``name``, created at position 0 (stopped) if missing."""

    def get(self, uow: Any, name: str) -> Checkpoint | None:
        """The stored checkpoint, or None."""

    def listing(self, uow: Any) -> list[Checkpoint]:
        """Every checkpoint, by name."""

    def advance(
        self,
        uow: Any,
        name: str,
        *,
        start: int,
        end: int,
        now: float,
        runner: str,
        version: int | None = None,
    ) -> None:
        """Move from ``start`` to ``end`` (running), unless paused, moved elsewhere or
        (given ``version``) swapped to another version."""

    def pause(
        self,
        uow: Any,
        name: str,
        *,
        start: int,
        end: int,
        failed: EventRecord,
        error: str,
        now: float,
    ) -> None:
        """Move from ``start`` to ``end`` and pause on ``failed`` with ``error``."""

    def resume(self, uow: Any, name: str, now: float) -> Checkpoint:
        """Clear a pause: the runner applies the failed event again."""

    def skip(self, uow: Any, name: str, *, position: int, by: str, note: str, now: float) -> Skip:
        """Pass over the event a paused projection failed on (it must be ``position``)."""

    def skips(self, uow: Any, name: str) -> list[Skip]:
        """The events skipped in ``name``, oldest first."""

    def beat(self, uow: Any, names: Sequence[str], now: float, runner: str, state: str) -> None:
        """Note that ``runner`` is alive and holds ``names`` (paused ones stay paused)."""

    def remove(self, uow: Any, name: str) -> bool:
        """Forget the checkpoint: the projection starts again from position 0."""

    def put(self, uow: Any, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` whole, over the stored one of its name if any."""

    def lock(self, uow: Any, name: str) -> None:
        """Hold the row of ``name`` until the transaction ends."""


class ProjectionLog(Protocol):
    """The global log's head and commit times, for lag: read in the unit of work given."""

    def head(self, uow: Any, position: int) -> LogHead:
        """The head, its time, and how far ``position`` is behind it."""


class CommitSignal(Protocol):
    """Wakes a waiting reader when a transaction commits events (polling at worst)."""

    def wait_for_work(self, timeout: float) -> None:
        """Return when something may have committed, or after ``timeout`` seconds."""

    def close(self) -> None:
        """Release what the signal holds (a listening connection)."""


class SagaLog(Protocol):
    """Saga instances and their transitions, each written in the unit of work given.

    ``update`` must write only if the stored saga is still at ``expected_version``
    (raising ``SagaConflictError`` otherwise): that is what keeps two orchestrators from
    both moving one saga."""

    def create(self, uow: Any, row: SagaRow, transitions: list[Transition]) -> None:
        """Insert a new saga and its first transitions."""

    def update(
        self, uow: Any, row: SagaRow, expected_version: int, transitions: list[Transition]
    ) -> None:
        """Replace the saga's row if it is still at ``expected_version``; add transitions."""

    def get(self, uow: Any, saga_id: str) -> SagaRow | None:
        """The stored saga, or None."""

    def due(self, uow: Any, now: float, states: tuple[str, ...], limit: int) -> list[str]:
        """Ids of sagas in ``states`` whose wake-up time has come."""

    def next_wake(self, uow: Any, states: tuple[str, ...], after: float) -> float | None:
        """The earliest wake-up time later than ``after`` of a saga in ``states``."""

    def counts(self, uow: Any) -> dict[str, int]:
        """How many sagas are in each state."""

    def listing(self, uow: Any, state: str | None, limit: int) -> list[SagaRow]:
        """Sagas in one state, or all."""

    def history(self, uow: Any, saga_id: str) -> list[Transition]:
        """A saga's transitions, oldest first."""

    def total(self, uow: Any, kind: str, saga_type: str | None) -> tuple[int, float]:
        """The count and summed amount of transitions of ``kind``."""


class SourceCheckpoints(Protocol):
    """The checkpoints of projections fed by a broker stream, one per projection and
    source service, written in the unit of work given (the consumer's batch), beside
    the read model's rows; and each source position applied, for the waits on it."""

    def applied(
        self,
        uow: Any,
        name: str,
        *,
        source: str,
        position: int | None,
        event_time: float,
        now: float,
    ) -> None:
        """Note one message applied: the highest position, the times, the position."""

    def listing(self, uow: Any, name: str | None = None) -> list[SourceCheckpoint]:
        """The checkpoints of ``name`` (of every stream projection if None)."""

    def forget_positions(self, uow: Any, before: float) -> int:
        """Delete the kept positions applied before ``before``; return how many."""


class SourcePositions(Protocol):
    """The same, read outside a unit of work by a waiter that looks many times a second."""

    def has_applied(self, name: str, source: str, position: int) -> bool:
        """True when ``name`` has applied the event at ``position`` of ``source``."""

    def listing(self, name: str) -> list[SourceCheckpoint]:
        """The checkpoints of ``name``, one per source."""

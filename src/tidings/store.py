"""The composition root: ``tidings.connect(url)`` builds the adapters for one database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec

from tidings.adapters.bus_transport import BusTransport
from tidings.adapters.checkpoint_reader import checkpoint_reader
from tidings.adapters.sql_projections import projection_parts
from tidings.adapters.sql_sagas import MEMORY_TABLES, SqlSagaLog
from tidings.adapters.sql_sagas import ddl as saga_ddl
from tidings.adapters.sql_source_checkpoints import SourceReader, stream_parts
from tidings.application.bus import InMemoryBus
from tidings.application.causation import Cause, current_cause
from tidings.application.event_log import iter_log
from tidings.application.handling import Delivery, Handlers, InboxProcessor
from tidings.application.projections import Projection, ProjectionRunner
from tidings.application.projections.from_stream import (
    SourceStatus,
    SourceToken,
    stream_handlers,
    wait_for_source,
)
from tidings.application.projections.from_stream import status_of as stream_status_of
from tidings.application.projections.partitioned import PartitionedRunner
from tidings.application.projections.rebuild import Rebuild
from tidings.application.projections.waiting import Progress, ReadCheckpoint, wait_for
from tidings.application.relayed_bus import RelayedBus
from tidings.application.repository import EventSourcedRepository
from tidings.application.sagas import Orchestrator, SagaResult
from tidings.application.unit_of_work import UnitOfWork
from tidings.backends import (
    OutboxAdapter,
    in_flight_of,
    inbox_of,
    leases_of,
    messages_of,
    open_backend,
    outbox_of,
)
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7
from tidings.domain.saga import SagaDefinition
from tidings.domain.saga_versions import SagaUpcaster
from tidings.errors import ConfigurationError, HandlerFailedError
from tidings.observability.tracing import destination_of
from tidings.ports import (
    Database,
    EventStore,
    EventWriter,
    Inbox,
    InFlight,
    KeyStore,
    Leases,
    Messages,
    OutgoingMessage,
    Publisher,
    SnapshotStore,
    Subscription,
    Transaction,
    Transport,
)
from tidings.records import EventRecord, StreamInfo
from tidings.serialization.cloudevents import from_message, to_message
from tidings.serialization.codec import JsonCodec
from tidings.serialization.personal import PersonalDataCipher
from tidings.serialization.registry import EventRegistry
from tidings.workers.consumer import Consumer, subscription_name
from tidings.workers.partitioned_consumer import (
    CheckedSubscription,
    PartitionedConsumer,
    partition_name,
)
from tidings.workers.relay import Encode, Relay

A = TypeVar("A", bound=EventSourcedAggregate)


class InboxOnBus:
    """A bus handler that runs every event through an inbox processor.

    With an outbox the event came through a relay: a failed handler raises, the relay
    sees the refusal and delivers again later. Without one (level 3) nothing would deliver
    it again, so a failure is kept as a dead letter at once, to be retried from there.
    """

    def __init__(self, store: Store, processor: InboxProcessor) -> None:
        self.store, self.processor = store, processor

    def __call__(self, event: DomainEvent) -> None:
        cause = current_cause()  # the unit of work (or relay) that handed the event over
        context = msgspec.json.encode(cause.metadata()) if cause is not None else b"{}"
        record = self.store.codec.encode(event, context)
        body = self.store.encode(record).body
        [verdict] = self.processor.process([Delivery(body, record)])
        if verdict.ack:
            return
        if self.store.outbox is None:
            self.processor.bury(
                Delivery(body, record),
                "a handler failed and the in-memory "
                "bus does not deliver again (level 3): retry it from here",
            )
            return
        raise HandlerFailedError(
            f"event {event.event_id} goes round again in {verdict.retry_in:.1f} s"
        )


class Store:
    """One database's tidings tables, the codec, and the bus events go to after commit.

    Build it with ``tidings.connect``; use ``unit_of_work()`` for every change,
    ``repository(cls)`` for event-sourced aggregates, and the read methods to look at the
    event log. Close it (or use it as a context manager)
    to release connections.
    """

    def __init__(
        self,
        database: Database,
        events: EventStore,
        registry: EventRegistry,
        *,
        bus: InMemoryBus | None = None,
        writers: Sequence[EventWriter] = (),
        outbox: OutboxAdapter | None = None,
        inbox: Inbox | None = None,
        in_flight: InFlight | None = None,
        messages: Messages | None = None,
        snapshots: SnapshotStore | None = None,
        source: str = "tidings",
        keys: KeyStore | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.database = database
        self.events = events
        self.snapshots = snapshots
        self.keys = keys
        self.registry = registry
        self.cipher = PersonalDataCipher(keys) if keys is not None else None
        self.codec = JsonCodec(registry, self.cipher)
        self.bus = bus if bus is not None else InMemoryBus()
        self.writers = list(writers)
        self.outbox = outbox
        self.inbox = inbox
        self.in_flight = in_flight
        self.messages = messages
        # Numbered slots shared fairly among live workers under fencing tokens: the relays'
        # lanes, and any worker's partitions (docs/leases.md).
        self.leases = leases
        self.source = source
        # The runners built here wake read-your-writes waiters of this store through it.
        self.projection_progress = Progress()
        self._read_checkpoint: ReadCheckpoint | None = None
        self._source_reader: SourceReader | None = None
        # With an outbox, events reach handlers through a relay, at least once; handing
        # them to the bus after the commit as well would deliver them twice.
        self._publisher: Publisher = self.bus if outbox is None else RelayedBus(self.bus)
        if outbox is not None:
            self.writers.append(outbox)

    def unit_of_work(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> UnitOfWork:
        """A new unit of work; ``metadata`` (JSON-able) is stored with each of its events.

        Its events carry a correlation id and a causation id: those of the message being
        handled when it is opened inside a handler, else ``correlation_id`` (and
        ``causation_id``, by default the same) if given, else a new conversation's
        (see ``tidings.application.causation``)."""
        cause = None
        if correlation_id is not None:
            cause = Cause(correlation_id, causation_id or correlation_id, {})
        return UnitOfWork(
            self.database,
            self.events,
            self.codec,
            publisher=self._publisher,
            writers=self.writers,
            metadata=metadata,
            cause=cause,
            messages=self.messages,
        )

    def sagas(
        self,
        definitions: Iterable[SagaDefinition | SagaUpcaster] = (),
        *,
        clock: Callable[[], float] = time.time,
        lease: float = 30.0,
        on_intervention: Callable[[SagaResult], None] | None = None,
        by: str = "",
    ) -> Orchestrator:
        """A saga orchestrator on this store (see docs/sagas.md): it starts and drives
        sagas of ``definitions`` (every version still running, and the ``SagaUpcaster``
        between them), keeping their state and history in the store's tables.
        ``clock`` gives the time in seconds (inject one in tests), ``lease`` how long a
        step may run before another orchestrator takes it over, ``on_intervention`` is
        called when a saga's compensation has failed for good, ``by`` names the driver on
        the transitions it writes."""
        tables = getattr(self.database, "tables", None)
        if tables is None:  # memory://: your statements' tables live in-process
            tables = MEMORY_TABLES
            with self.unit_of_work() as uow:
                for statement in saga_ddl(tables):
                    uow.execute(statement)
        return Orchestrator(
            self,
            definitions,
            SqlSagaLog(tables),
            clock=clock,
            lease=lease,
            on_intervention=on_intervention,
            by=by,
        )

    def projections(
        self, projections: Iterable[Projection] = (), **options: Any
    ) -> ProjectionRunner:
        """A runner of ``projections`` on this store's global log (see docs/cqrs.md):
        ``run_once()``, ``run(stop)``, ``status()``, ``retry``, ``skip``. Options go to
        ``ProjectionRunner`` (``batch``, ``poll``, ``clock``, ``on_lag``, ...). With
        ``partitions=P`` it is a ``PartitionedRunner``: this worker's share of each
        projection's P parts, leased from ``store.leases`` (``ttl`` seconds)."""
        checkpoints, head, signal = projection_parts(self)
        options.setdefault("progress", self.projection_progress)
        options.setdefault("read_checkpoint", self._checkpoint_reader())
        if options.get("partitions") is not None:
            if self.leases is None:
                raise ConfigurationError("partitioned projections need the store's leases")
            return PartitionedRunner(
                self, projections, checkpoints, head, signal, leases=self.leases, **options
            )
        options.pop("partitions", None)
        return ProjectionRunner(self, projections, checkpoints, head, signal, **options)

    def wait_for(
        self, token: int | str | SourceToken | None, projection: str, timeout: float = 5.0
    ) -> int:
        """Read-your-writes: block until ``projection`` has applied ``token`` (a unit of
        work's ``position``) and return its position; raise ``ProjectionTimeoutError``
        after ``timeout`` seconds (see ``ProjectionRunner.wait_for``). The projection may
        run in this process (its runner wakes the wait) or in another (a short poll).
        Another service's token, ``"<source>:<position>"`` (``source_token``), waits for
        a projection this store feeds from that service's stream (docs/cqrs.md)."""
        read = self._checkpoint_reader()
        if token is None or isinstance(token, int):
            return wait_for(read, self.projection_progress, token, projection, timeout)
        if self._source_reader is None:
            self._source_reader = SourceReader(self)
        return wait_for_source(
            self, token, projection, timeout, read_local=read, reader=self._source_reader
        )

    def projection_handlers(
        self,
        projections: Projection | Iterable[Projection],
        handlers: Handlers | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> Handlers:
        """Consumer handlers that keep ``projections`` from the events a broker delivers
        (another service's, the spec's pattern 2; see docs/cqrs.md): give them to
        ``store.consumer(subscription, handlers)``. The inbox drops duplicates; each
        projection's writes and its checkpoint of the message's source (the highest
        position applied, and the time) commit in the consumer's batch. Added to
        ``handlers`` when given; each projection's tables are made now."""
        checkpoints, sources = stream_parts(self)
        return stream_handlers(
            self, projections, handlers, checkpoints=checkpoints, sources=sources, clock=clock
        )

    def forget_stream_positions(self, older_than: float) -> int:
        """Delete the source positions stream projections keep for waits, of events
        applied more than ``older_than`` seconds ago; return how many. A wait on a token
        older than that no longer finds it (their checkpoints stay)."""
        _, sources = stream_parts(self)
        with self.unit_of_work() as uow:
            return sources.forget_positions(uow, time.time() - older_than)

    def stream_status(self, name: str | None = None) -> list[SourceStatus]:
        """The figures of the projections fed by a broker stream (``name``, or all), one
        per source service: position, events applied, lag in seconds."""
        _, sources = stream_parts(self)
        now = time.time()
        with self.unit_of_work() as uow:
            return [stream_status_of(c, now) for c in sources.listing(uow, name)]

    def _checkpoint_reader(self) -> ReadCheckpoint:
        if self._read_checkpoint is None:
            self._read_checkpoint = checkpoint_reader(self)
        return self._read_checkpoint

    def rebuild(self, projection: Projection, **options: Any) -> Rebuild:
        """A blue/green rebuild of ``projection`` (its new version) on this store (see
        docs/cqrs.md, Rebuilds): ``begin()``, ``catch_up()``, ``swap(verify=...)``, then
        ``rollback()`` or ``drop_old()``. Options: ``batch``, ``clock``, ``runner_id``."""
        checkpoints, head, signal = projection_parts(self)
        signal.close()  # a rebuild does not wait for commits: it reads to the head
        return Rebuild(self, projection, checkpoints, head, **options)

    def unit_of_work_in(
        self,
        tx: Transaction,
        cause: Cause | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> UnitOfWork:
        """A unit of work inside ``tx``, a transaction someone else commits (a consumer's
        batch, a SQLAlchemy session): its events are written there and handed on when that
        commits. ``cause`` is the message being handled (by default the current one);
        ``metadata`` is stored with each event."""
        return UnitOfWork(
            self.database,
            self.events,
            self.codec,
            publisher=self._publisher,
            writers=self.writers,
            metadata=metadata,
            cause=cause,
            joined=tx,
            messages=self.messages,
        )

    def decode(self, record: EventRecord) -> DomainEvent:
        """The event a stored or received record holds."""
        return self.codec.decode(record, self.database.describe())

    def processor(self, handlers: Handlers, **options: Any) -> InboxProcessor:
        """An inbox processor running ``handlers`` on this store (see ``InboxProcessor``)."""
        if self.inbox is None:
            raise ConfigurationError("this store has no inbox")
        return InboxProcessor(self, self.inbox, handlers, self.database, **options)

    def repository(
        self,
        aggregate_class: type[A],
        *,
        snapshot_every: int | None = None,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> EventSourcedRepository[A]:
        """The repository of an event-sourced class; registers the events it applies."""
        self.registry.register(*aggregate_class.appliers)
        return EventSourcedRepository(
            aggregate_class,
            self.database,
            self.events,
            self.codec,
            self.snapshots,
            snapshot_every=snapshot_every,
            clock=clock,
            ids=ids,
        )

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        as_of: datetime | None = None,
    ) -> Iterator[DomainEvent]:
        """The decoded events of one stream, oldest first (see ``EventStore.read_stream``)."""
        where = self.database.describe()
        for record in self.events.read_stream(stream_id, from_version, to_version, as_of=as_of):
            yield self.codec.decode(record, where)

    def stream_info(self, stream_id: str, as_of: datetime | None = None) -> StreamInfo:
        """A stream's version and first and last event times, now or as of ``as_of``."""
        return self.events.stream_info(stream_id, as_of)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[DomainEvent]:
        """Up to ``limit`` decoded events of the global log after ``after_position``."""
        where = self.database.describe()
        return [self.codec.decode(r, where) for r in self.events.read_all(after_position, limit)]

    def forget(self, subject: str) -> bool:
        """Forget a subject (GDPR's right to erasure) by deleting its key for good.

        From then on every field sealed for ``subject`` reads back as
        ``tidings.domain.personal.REDACTED``, in events, snapshots and outbox rows alike,
        and the aggregates still load. Copies already published as plaintext are out of
        reach (docs/event-sourcing.md). Returns False when the subject had no key.
        """
        if self.cipher is None:
            raise ConfigurationError("this store has no key store, so it holds no personal data")
        return self.cipher.forget(subject)

    def relay(
        self, transport: Transport | None = None, encode: Encode | None = None, **options: Any
    ) -> Relay:
        """A relay from this store's outbox to ``transport`` (a broker publisher), or to this
        store's in-memory bus when none is given (levels 2 and 4, in one process).
        Messages are CloudEvents from ``self.source`` unless ``encode`` says otherwise."""
        if self.outbox is None:
            raise ConfigurationError(
                "this store has no outbox: connect with tidings.connect(url, outbox=True)"
            )
        if self.leases is None:
            raise ConfigurationError(
                "this store has an outbox but no leases for its lanes: build it with "
                "tidings.connect(url, outbox=True)"
            )
        if transport is None:
            transport = BusTransport(self.bus, self.decode)
        options.setdefault("messages", self.messages)
        return Relay(self.outbox, self.leases, transport, encode or self.encode, **options)

    def encode(self, record: EventRecord) -> OutgoingMessage:
        """The CloudEvent of a stored event, from this store's bounded context."""
        return to_message(record, self.source)

    def subscribe_inbox(self, handlers: Handlers, **options: Any) -> InboxProcessor:
        """Run ``handlers`` behind the inbox for every event the in-memory bus delivers
        (level 3; with an outbox and an in-process relay, level 4)."""
        processor = self.processor(handlers, **options)
        self.bus.subscribe(DomainEvent, InboxOnBus(self, processor), name="inbox")
        return processor

    def consumer(self, subscription: Subscription, handlers: Handlers, **options: Any) -> Consumer:
        """A consumer from a broker ``subscription`` through the inbox to ``handlers``
        (level 5). Options go to ``Consumer`` and to the processor (``max_attempts``).
        The consumer's ``name`` (what it fetched is recorded under it) is the
        subscription's durable consumer or queue unless given."""
        processor_options = {k: options.pop(k) for k in ("max_attempts", "backoff") if k in options}
        destination = destination_of(subscription)
        processor = self.processor(handlers, destination=destination, **processor_options)
        options.setdefault("name", subscription_name(subscription))
        return Consumer(
            processor,
            subscription,
            from_message,
            inbox=self.inbox,
            in_flight=self.in_flight,
            **options,
        )

    def partitioned_consumer(
        self,
        subscribe: Callable[[int], Subscription],
        handlers: Handlers,
        *,
        name: str,
        partitions: int,
        ttl: float = 15.0,
        owner: str | None = None,
        **options: Any,
    ) -> PartitionedConsumer:
        """This process's share of the consumer ``name`` of a stream published into
        ``partitions`` partitions (``tidings relay --partitions``): ``subscribe(p)`` opens
        partition p's queue or durable consumer (``brokers.open_partition``); the
        partitions are leased from ``self.leases`` (``ttl`` seconds), each handling
        transaction fenced by its partition's token. Options go to each ``Consumer``."""
        if self.leases is None:
            raise ConfigurationError("partitioned consumers need the store's leases")

        def make(partition: int, fence: Callable[[Transaction], None]) -> Consumer:
            subscription = CheckedSubscription(subscribe(partition), partitions)
            return self.consumer(
                subscription,
                handlers,
                name=partition_name(name, partition),
                fence=fence,
                **options,
            )

        return PartitionedConsumer(
            make, self.leases, name=name, partitions=partitions, ttl=ttl, owner=owner
        )

    def iter_all(self, after_position: int = 0, page: int = 1000) -> Iterator[DomainEvent]:
        """Every decoded event after ``after_position``, a page at a time (flat memory)."""
        where = self.database.describe()
        for record in iter_log(self.events, after_position, page):
            yield self.codec.decode(record, where)

    def close(self) -> None:
        """Release the database connections."""
        if self.outbox is not None:
            self.outbox.close()
        if self.leases is not None:
            self.leases.close()
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    *,
    registry: EventRegistry | None = None,
    bus: InMemoryBus | None = None,
    prefix: str = "tidings_",
    schema: str = "public",
    synchronous: str = "FULL",
    create_schema: bool = True,
    outbox: bool = False,
    source: str = "tidings",
) -> Store:
    """Open the store at ``url`` and create its tables on first use.

    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` for an SQLite file,
    ``postgresql://user@host:5432/dbname`` for PostgreSQL (``schema`` picks the
    PostgreSQL schema), ``memory://`` for a store that lives in this process.
    ``prefix`` starts every table name. ``synchronous`` is SQLite's durability setting
    (FULL by default; NORMAL is an explicit trade of the last commits on power loss for
    speed). With ``create_schema=False`` tidings expects the tables to exist already
    (``tidings schema`` prints their DDL). With ``outbox=True`` every unit of work also
    writes outbox rows, and events reach handlers and brokers through a relay
    (``store.relay(...)`` or ``tidings relay``) instead of straight after the commit.
    ``source`` names the bounded context on the wire (the CloudEvents ``source``).
    """
    registry = registry if registry is not None else EventRegistry()
    database, events, snapshots, keys = open_backend(
        url, prefix=prefix, schema=schema, synchronous=synchronous
    )
    try:
        if create_schema:
            database.create_schema()
        leases = leases_of(database)
        box = outbox_of(database, leases) if outbox else None
        messages = messages_of(database, box) if box is not None else None
    except BaseException:
        database.close()
        raise
    return Store(
        database,
        events,
        registry,
        bus=bus,
        outbox=box,
        inbox=inbox_of(database),
        in_flight=in_flight_of(database),
        messages=messages,
        snapshots=snapshots,
        source=source,
        keys=keys,
        leases=leases,
    )

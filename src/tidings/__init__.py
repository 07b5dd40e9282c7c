"""tidings: domain events that are never lost, never phantom, never applied twice.

Start with ``tidings.connect("sqlite:///shop.db")``; see the README for the tour.
"""

from tidings.application.bus import HandlerFailure, InMemoryBus
from tidings.application.handling import Handlers
from tidings.application.migration import MigrationReport, migrate
from tidings.application.repository import EventSourcedRepository
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.aggregate import Aggregate
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.domain.ids import UUID7Source, utc_now, uuid7
from tidings.domain.messages import Message
from tidings.domain.personal import REDACTED
from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepRefusedError,
    StepUnknownError,
)
from tidings.domain.saga_messages import SagaCommand, SagaReply
from tidings.domain.saga_state import SagaResult
from tidings.domain.saga_versions import SagaPosition, SagaUpcaster
from tidings.errors import (
    AggregateNotFoundError,
    BadMessageError,
    BrokerBusyError,
    BrokerUnavailableError,
    ConcurrencyError,
    ConfigurationError,
    DataRefusedError,
    DecodeError,
    DomainError,
    HandlerFailedError,
    HeldWriteError,
    LeaseCountError,
    MessageRejectedError,
    MigrationError,
    ProjectionConflictError,
    ProjectionError,
    ProjectionTimeoutError,
    SagaConflictError,
    SagaError,
    SagaVersionError,
    SerializationError,
    ServerUnavailableError,
    StorageError,
    TidingsError,
    TransportError,
    UnitOfWorkError,
    UnknownEventTypeError,
)
from tidings.ports import ANY_VERSION, NO_STREAM
from tidings.records import EventRecord, SnapshotRecord, StreamInfo
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry
from tidings.store import Store, connect
from tidings.workers.sagas import SagaWorker

__version__ = "0.1.0"

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "REDACTED",
    "Aggregate",
    "AggregateNotFoundError",
    "BadMessageError",
    "BrokerBusyError",
    "BrokerUnavailableError",
    "ConcurrencyError",
    "ConfigurationError",
    "DataRefusedError",
    "DecodeError",
    "DomainError",
    "DomainEvent",
    "EventRecord",
    "EventRegistry",
    "EventSourcedAggregate",
    "EventSourcedRepository",
    "HandlerFailedError",
    "HandlerFailure",
    "Handlers",
    "HeldWriteError",
    "InMemoryBus",
    "JsonCodec",
    "LeaseCountError",
    "Message",
    "MessageRejectedError",
    "MigrationError",
    "MigrationReport",
    "ProjectionConflictError",
    "ProjectionError",
    "ProjectionTimeoutError",
    "RetryPolicy",
    "SagaCommand",
    "SagaConflictError",
    "SagaDefinition",
    "SagaError",
    "SagaPosition",
    "SagaReply",
    "SagaResult",
    "SagaUpcaster",
    "SagaVersionError",
    "SagaWorker",
    "SerializationError",
    "ServerUnavailableError",
    "SnapshotRecord",
    "Step",
    "StepContext",
    "StepRefusedError",
    "StepUnknownError",
    "StorageError",
    "Store",
    "StreamInfo",
    "TidingsError",
    "TransportError",
    "UUID7Source",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnknownEventTypeError",
    "connect",
    "migrate",
    "utc_now",
    "uuid7",
]

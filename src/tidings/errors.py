"""Every error tidings raises, in one tree.

    TidingsError
    ├── ConfigurationError        a URL, option or identifier that cannot work
    │   └── LeaseCountError        a lease set asked for with another count than it has
    ├── DomainError               a business rule refused a command (raised by user aggregates)
    ├── ConcurrencyError          another writer changed the stream first; reload and retry
    ├── AggregateNotFoundError    no events of the aggregate (at that version or time)
    ├── SerializationError        an event could not be turned into or out of its stored form
    │   ├── UnknownEventTypeError  no class is registered for a stored type and version
    │   └── DecodeError            the stored bytes are not valid JSON or do not fit the class
    ├── StorageError              the database failed (connection, disk, constraint); driver
    │   │                         errors are chained as ``__cause__``
    │   ├── ServerUnavailableError the database server cannot be reached
    │   └── DataRefusedError       the database refused a value or a size in the data itself
    ├── HandlerFailedError        an inbox handler failed; the event is delivered again later
    ├── MessageRejectedError      a handler says a message can never be handled: dead-lettered
    ├── TransportError            a broker refused or failed an operation
    │   ├── BrokerUnavailableError the broker cannot be reached, or did not answer; retry later
    │   │   └── BrokerBusyError    the broker is reached but gave no answer in time, or said
    │   │                          it is busy; ``answered`` keeps what it did answer
    │   └── BadMessageError        a received message is not a valid tidings CloudEvent
    ├── UnitOfWorkError           the unit of work was used out of order (e.g. reused after exit)
    │   └── HeldWriteError         a merged write's result read after the next write
    ├── ProjectionError           a projection cannot run or be operated as asked
    │   ├── ProjectionConflictError another runner moved the checkpoint first (rolled back)
    │   └── ProjectionTimeoutError  a projection did not apply a consistency token in time
    ├── MigrationError            an event migration refused its input or failed its final check
    └── SagaError                 a saga cannot be started, found or driven as asked
        ├── SagaConflictError      another orchestrator moved the saga first (rolled back)
        └── SagaVersionError       no definition here can drive the saga's version: left as it was

Adapters translate driver exceptions at their boundary (``raise ... from exc``) so callers
never need to import ``sqlite3`` or ``psycopg`` to handle a failure.
"""

from __future__ import annotations

from collections.abc import Mapping


class TidingsError(Exception):
    """Base of every error raised by tidings."""


class ConfigurationError(TidingsError):
    """A URL, option or identifier given to tidings cannot work as given."""


class LeaseCountError(ConfigurationError):
    """A lease set (the relay's lanes, say) was asked for with another number of slots
    than the one its live owners hold: every worker of one set must use the same count."""

    def __init__(self, name: str, stored: int, asked: int) -> None:
        self.name, self.stored, self.asked = name, stored, asked
        super().__init__(
            f"the lease set {name!r} has {stored} slots and live owners hold some of them; "
            f"this worker asked for {asked}: give every worker of the set the same count "
            "(for relays, the same --lanes), or stop them all, or wait until their leases "
            "run out, to change it"
        )


class DomainError(TidingsError):
    """A business rule refused a command; aggregates raise subclasses of it."""


class ConcurrencyError(TidingsError):
    """Another writer appended to the stream first; nothing of this write was kept."""

    def __init__(self, stream_id: str, expected_version: int, actual_version: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream_id!r} is at version {actual_version}, but this write expected "
            f"version {expected_version}: another writer changed it first. Nothing was "
            "written; load the aggregate again (with its stored version) and retry the command."
        )


class AggregateNotFoundError(TidingsError):
    """A repository found no events for the aggregate, or not as far as the version asked."""


class SerializationError(TidingsError):
    """An event could not be turned into, or read back from, its stored form."""


class UnknownEventTypeError(SerializationError):
    """A stored event names a type (or schema version) that no registered class matches."""


class DecodeError(SerializationError):
    """Stored event bytes are not valid JSON or do not match the registered class."""


class StorageError(TidingsError):
    """The database failed; the driver's exception is the ``__cause__``."""


class ServerUnavailableError(StorageError):
    """The database server could not be reached."""


class DataRefusedError(StorageError):
    """The database refused a value or a size in the data written (PostgreSQL's SQLSTATE
    classes 22 and 54, SQLite's "too big" and "datatype mismatch"): the data is at fault,
    not the server, so writing it again fails again. A consumer dead-letters the message
    that carried it and goes on; it is never an outage."""


class HandlerFailedError(TidingsError):
    """An inbox handler failed; its writes were undone and the event comes round again."""


class MessageRejectedError(TidingsError):
    """A handler says this message can never be handled (a reply for a saga that does not
    exist): the consumer dead-letters it at once with this reason, without retries."""


class TransportError(TidingsError):
    """A broker refused or failed an operation; the client's exception is the ``__cause__``."""


class BrokerUnavailableError(TransportError):
    """The broker cannot be reached, or did not answer: an outage, to wait out and retry.

    Nothing of the operation may be assumed done, except what ``answered`` says: for a
    publish, the index of each message the broker did answer, with None (confirmed) or the
    reason it refused that message. The messages not in it got no answer; they are sent
    again later, and were not refused.
    """

    def __init__(self, message: str, answered: Mapping[int, str | None] | None = None) -> None:
        super().__init__(message)
        self.answered: dict[int, str | None] = dict(answered or {})


class BrokerBusyError(BrokerUnavailableError):
    """The broker is reached, but gave no answer within the timeout or said it cannot
    answer now (stalled, overloaded, electing a leader): transient, like an outage."""


class BadMessageError(TransportError):
    """A received message is not a valid tidings CloudEvent; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnitOfWorkError(TidingsError):
    """A unit of work was used outside its ``with`` block or after it ended."""


class HeldWriteError(UnitOfWorkError):
    """A handler read a write's result after making another write of a merged batch."""


class ProjectionError(TidingsError):
    """A projection cannot run or be operated as asked (the message says why and what to do)."""


class ProjectionConflictError(ProjectionError):
    """Another runner moved the projection's checkpoint first; this batch was rolled back."""


class ProjectionTimeoutError(ProjectionError):
    """A projection had not applied a consistency token when the wait ran out.

    ``projection``, ``token``, ``position`` (where it stood) and ``state`` say how far it
    was; the message adds why it may be stuck (paused on an event, no runner)."""

    def __init__(self, message: str, *, projection: str, token: int, position: int, state: str):
        super().__init__(message)
        self.projection, self.token, self.position, self.state = projection, token, position, state


class MigrationError(TidingsError):
    """An event migration refused its input (a target that is not empty, a transform that
    changed what must be kept) or its final check found the target differs."""


class SagaError(TidingsError):
    """A saga cannot be started, found or driven as asked (the message says why)."""


class SagaConflictError(SagaError):
    """Another orchestrator moved the saga first; this transition was rolled back."""


class SagaVersionError(SagaError):
    """No definition or upcaster here can drive the saga's version; it was left untouched."""

"""The public API of tidings: its names, their docstrings, and what importing it costs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import tidings
import tidings.errors

EXPECTED_PUBLIC_NAMES = {
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
    "DecodeError",
    "DomainError",
    "DomainEvent",
    "EventRecord",
    "EventRegistry",
    "EventSourcedAggregate",
    "EventSourcedRepository",
    "HandlerFailedError",
    "HeldWriteError",
    "HandlerFailure",
    "Handlers",
    "InMemoryBus",
    "JsonCodec",
    "LeaseCountError",
    "MigrationError",
    "ProjectionConflictError",
    "ProjectionError",
    "ProjectionTimeoutError",
    "SagaConflictError",
    "SagaError",
    "SagaVersionError",
    "RetryPolicy",
    "SagaCommand",
    "SagaDefinition",
    "SagaPosition",
    "SagaReply",
    "SagaResult",
    "SagaUpcaster",
    "SagaWorker",
    "Step",
    "StepContext",
    "StepRefusedError",
    "StepUnknownError",
    "MigrationReport",
    "SerializationError",
    "ServerUnavailableError",
    "DataRefusedError",
    "Message",
    "MessageRejectedError",
    "SnapshotRecord",
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
}


def public_objects() -> dict[str, object]:
    """Every name of ``tidings.__all__`` with the object it stands for."""
    return {name: getattr(tidings, name) for name in tidings.__all__}


def error_classes() -> list[type[BaseException]]:
    """The exception classes defined in tidings.errors."""
    return [
        cls
        for _, cls in inspect.getmembers(tidings.errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == "tidings.errors"
    ]


def has_own_docstring(obj: object) -> bool:
    """True when ``obj`` has a written docstring (not the signature dataclasses make up)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    generated = f"{getattr(obj, '__name__', '')}("
    return bool(doc) and not doc.startswith(generated)


def test_all_lists_exactly_the_expected_public_names() -> None:
    """tidings.__all__ is the agreed public API: changing it means changing this test."""
    assert len(tidings.__all__) == len(set(tidings.__all__))
    assert set(tidings.__all__) == EXPECTED_PUBLIC_NAMES


def test_every_name_in_all_exists() -> None:
    """Each name of __all__ is an attribute of the tidings package."""
    missing = [name for name in tidings.__all__ if not hasattr(tidings, name)]
    assert missing == []


def test_every_public_class_and_function_has_a_docstring() -> None:
    """Classes and functions exported by tidings document themselves."""
    documented = {
        name: has_own_docstring(obj)
        for name, obj in public_objects().items()
        if inspect.isclass(obj) or inspect.isfunction(obj)
    }
    assert len(documented) >= 20
    assert [name for name, ok in documented.items() if not ok] == []


def test_every_public_method_of_the_exported_classes_has_a_docstring() -> None:
    """Public methods and properties of the exported classes document themselves too."""
    undocumented = []
    for name, obj in public_objects().items():
        if not inspect.isclass(obj):
            continue
        for member, value in vars(obj).items():
            if member.startswith("_"):
                continue
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "__func__", function)
            if inspect.isfunction(function) and not has_own_docstring(function):
                undocumented.append(f"{name}.{member}")
    assert undocumented == []


def test_the_default_id_source_is_exported_ready_to_call() -> None:
    """``tidings.uuid7`` is a UUID7Source instance, documented through its class."""
    assert isinstance(tidings.uuid7, tidings.UUID7Source)
    assert has_own_docstring(tidings.UUID7Source)


def test_importing_tidings_does_not_import_the_postgresql_driver() -> None:
    """A fresh interpreter that imports tidings has not loaded psycopg."""
    result = subprocess.run(
        [sys.executable, "-c", "import tidings, sys; print('psycopg' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "False"


CORE_WITHOUT_CRYPTO = """
import sys
sys.modules["cryptography"] = None  # as if the crypto extra were not installed
import tidings
from tidings.testing.contract import Counter, Counted
store = tidings.connect("memory://", registry=tidings.EventRegistry([Counted]))
counter = Counter("c-1")
counter.increment(2)
with store.unit_of_work() as uow:
    uow.track(counter)
print([e.step for e in store.read_stream("c-1")])
"""


def test_the_core_works_without_the_crypto_extra() -> None:
    """With cryptography unimportable, tidings imports and stores events without personal
    data; only personal data needs the extra."""
    result = subprocess.run(
        [sys.executable, "-c", CORE_WITHOUT_CRYPTO],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[2]"


def test_every_error_class_derives_from_tidings_error() -> None:
    """Catching TidingsError catches every error tidings defines."""
    classes = error_classes()
    assert len(classes) >= 10
    assert [cls.__name__ for cls in classes if not issubclass(cls, tidings.TidingsError)] == []


def test_the_errors_module_docstring_mentions_every_error_class() -> None:
    """The tree drawn in tidings.errors' docstring has every class in it."""
    doc = tidings.errors.__doc__ or ""
    assert [cls.__name__ for cls in error_classes() if cls.__name__ not in doc] == []


def test_every_error_class_is_exported_from_tidings() -> None:
    """Callers can catch any tidings error without importing tidings.errors."""
    names = {cls.__name__ for cls in error_classes()}
    assert names <= set(tidings.__all__)
    assert all(getattr(tidings, name) is getattr(tidings.errors, name) for name in names)

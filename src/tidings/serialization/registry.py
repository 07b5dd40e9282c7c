"""EventRegistry: the explicit map between stored type names and event classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from tidings.domain.events import ENVELOPE_FIELDS, DomainEvent
from tidings.errors import ConfigurationError, UnknownEventTypeError


class EventRegistry:
    """Type name and schema version ↔ event class, readable on one screen.

    One class per type name: the current shape. Records stored at an older schema version
    resolve to the same class (schema evolution turns their payload into the current one);
    a record from a newer version than the code knows is refused, never guessed at.
    """

    def __init__(self, classes: Iterable[type[DomainEvent]] = ()) -> None:
        self._by_name: dict[str, type[DomainEvent]] = {}
        self.register(*classes)

    def register(self, *classes: type[DomainEvent]) -> None:
        """Add event classes; registering the same class again is a no-op."""
        for cls in classes:
            self._check(cls)
            name = cls.type_name()
            known = self._by_name.get(name)
            if known is not None and known is not cls:
                raise ConfigurationError(
                    f"event type {name!r} is already registered to {known.__qualname__}; "
                    f"give {cls.__qualname__} another event_type, or register only one of them"
                )
            self._by_name[name] = cls

    def resolve(self, event_type: str, schema_version: int) -> type[DomainEvent]:
        """The class for a stored type, or ``UnknownEventTypeError`` saying what to do."""
        cls = self._by_name.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(
                f"no event class is registered for type {event_type!r}; register it with "
                "registry.register(...) "
                f"(known types: {', '.join(sorted(self._by_name)) or 'none'})"
            )
        if schema_version > cls.schema_version:
            raise UnknownEventTypeError(
                f"{event_type!r} was stored at schema version {schema_version}, but this code "
                f"knows only up to version {cls.schema_version}: run the newer code to read it"
            )
        if schema_version < 1:
            raise UnknownEventTypeError(
                f"{event_type!r} has schema version {schema_version}; versions start at 1"
            )
        return cls

    def type_of(self, cls: type[DomainEvent]) -> str:
        """The stored name of a registered class, or a ``ConfigurationError`` if unregistered."""
        name = cls.type_name()
        if self._by_name.get(name) is not cls:
            raise ConfigurationError(
                f"event class {cls.__qualname__} is not registered: call "
                f"registry.register({cls.__name__}) where you build the store"
            )
        return name

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._by_name

    def names(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._by_name)

    @staticmethod
    def _check(cls: type[DomainEvent]) -> None:  # noqa: PLW0211 - it checks a class
        if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
            raise ConfigurationError(f"{cls!r} is not a DomainEvent subclass")
        params = getattr(cls, "__dataclass_params__", None)
        if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
            raise ConfigurationError(
                f"{cls.__qualname__} must be decorated with @dataclass(frozen=True, kw_only=True)"
            )
        if "__dataclass_fields__" not in cls.__dict__:
            raise ConfigurationError(
                f"{cls.__qualname__} inherits a dataclass but is not one itself: decorate it with "
                "@dataclass(frozen=True, kw_only=True)"
            )
        for name in ENVELOPE_FIELDS:
            if cls.__dataclass_fields__[name].type != DomainEvent.__dataclass_fields__[name].type:
                raise ConfigurationError(f"{cls.__qualname__} must not redefine {name!r}")
        if not isinstance(cls.schema_version, int) or cls.schema_version < 1:
            raise ConfigurationError(f"{cls.__qualname__}.schema_version must be an int >= 1")

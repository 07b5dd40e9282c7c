"""EventRegistry: the explicit map between stored type names and event classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tidings.domain.events import ENVELOPE_FIELDS, DomainEvent
from tidings.errors import ConfigurationError, UnknownEventTypeError
from tidings.serialization.personal import personal_fields

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON payload of one schema version into that of the next version."""


class EventRegistry:
    """Type name and schema version ↔ event class, readable on one screen.

    One class per type name: the current shape. Records stored at an older schema version
    resolve to the same class and are upcast on read: the upcaster registered for
    (type, version) turns the payload into version + 1, and so on up to the class's
    version. ``renames`` map names that records were once stored under to today's class
    (versions go on counting across a rename). A record from a newer version than the code
    knows is refused, never guessed at::

        EventRegistry(
            [ItemAdded],
            upcasters={("ItemAdded", 1): price_in_cents, ("ItemAdded", 2): with_currency},
            renames={"LineAdded": ItemAdded},
        )
    """

    def __init__(
        self,
        classes: Iterable[type[DomainEvent]] = (),
        *,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
        renames: Mapping[str, type[DomainEvent]] | None = None,
    ) -> None:
        self._by_name: dict[str, type[DomainEvent]] = {}
        self._renamed: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[type[DomainEvent], int], Upcaster] = {}
        self.register(*classes)
        for old_name, cls in (renames or {}).items():
            self.rename(old_name, cls)
        for (event_type, from_version), upcaster in (upcasters or {}).items():
            self.add_upcaster(event_type, from_version, upcaster)

    def register(self, *classes: type[DomainEvent]) -> None:
        """Add event classes; registering the same class again is a no-op."""
        for cls in classes:
            self._check(cls)
            name = cls.type_name()
            known = self._by_name.get(name)
            if name in self._renamed and self._renamed[name] is not cls:
                raise ConfigurationError(
                    f"event type {name!r} is an old name of {self._renamed[name].__qualname__}"
                    f"; records stored under it are read as that class, so "
                    f"{cls.__qualname__} needs another event_type"
                )
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

    def rename(self, old_name: str, cls: type[DomainEvent]) -> None:
        """Read records stored under ``old_name`` as ``cls`` (registered here if it is not)."""
        self.register(cls)
        if old_name == cls.type_name():
            raise ConfigurationError(f"{old_name!r} is the current name of {cls.__qualname__}")
        known = self._by_name.get(old_name)
        if known is not None and known is not cls:
            what = "an old name" if old_name in self._renamed else "the name"
            raise ConfigurationError(
                f"{old_name!r} is already {what} of {known.__qualname__}; it cannot also "
                f"name {cls.__qualname__}"
            )
        self._renamed[old_name] = cls
        self._by_name[old_name] = cls  # resolve() finds old names with no extra step

    def add_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register how a payload of ``event_type`` at ``from_version`` becomes the next
        version; ``event_type`` is a registered name (today's, or an old one)."""
        cls = self._by_name.get(event_type)
        if cls is None:
            raise ConfigurationError(
                f"cannot add an upcaster for {event_type!r}: register its class first"
            )
        if not 1 <= from_version < cls.schema_version:
            raise ConfigurationError(
                f"{cls.__qualname__} is at schema version {cls.schema_version}: upcasters "
                f"go from versions 1 to {cls.schema_version - 1}, not {from_version}"
            )
        if (cls, from_version) in self._upcasters:
            raise ConfigurationError(
                f"{cls.__qualname__} already has an upcaster from version {from_version}"
            )
        self._upcasters[cls, from_version] = upcaster

    def upcaster(self, cls: type[DomainEvent], from_version: int) -> Upcaster | None:
        """The upcaster of ``cls`` from ``from_version`` to the next, or None."""
        return self._upcasters.get((cls, from_version))

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
        """Registered type names (today's, not the old ones of renames), sorted."""
        return sorted(name for name in self._by_name if name not in self._renamed)

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
        personal_fields(cls)  # raises, naming the field, if personal_data cannot work

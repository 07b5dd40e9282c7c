"""A projection as its author writes it: a name, a version, handlers, and its tables."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidings.domain.events import DomainEvent

Handler = Callable[[Any, Any], None]
"""``handler(uow, event)``: writes the read model through ``uow.execute``."""

_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}\Z")
_TABLE = re.compile(
    r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?([A-Za-z_][A-Za-z0-9_]*)\"?", re.I
)
_INDEX = re.compile(
    r"\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?([A-Za-z_][A-Za-z0-9_]*)\"?"
    r"\s+ON\b",
    re.I,
)


@dataclass(frozen=True)
class Projection:
    """A read model built from the global event log.

    ``handlers`` map event classes to functions ``handler(uow, event)`` that write the
    read model with ``uow.execute`` (select and transform: no business rules, which stay
    in the aggregates). Events of other classes pass by. ``schema`` holds the DDL of the
    read model's tables, each statement written to be safe to run again (``CREATE TABLE IF
    NOT EXISTS``): it runs before the projection's first batch. ``indexes`` holds its
    ``CREATE INDEX`` statements apart, so that a rebuild creates them after the load.
    Bump ``version`` when the handlers change what they write (then rebuild it).
    ``lag_threshold`` (seconds) is when the lag check warns and calls the alert hook.
    """

    name: str
    handlers: Mapping[type[DomainEvent], Handler]
    schema: Sequence[str] = ()
    version: int = 1
    lag_threshold: float = 10.0
    indexes: Sequence[str] = ()

    @property
    def tables(self) -> list[str]:
        """The tables its ``schema`` creates (``CREATE TABLE name``), lower-cased: the
        names a rebuild builds in the shadow and swaps."""
        return [m.group(1).lower() for s in self.schema if (m := _TABLE.match(s))]

    @property
    def index_names(self) -> list[str]:
        """The indexes its ``schema`` and ``indexes`` create, lower-cased."""
        found = (_INDEX.match(s) for s in (*self.schema, *self.indexes))
        return [m.group(1).lower() for m in found if m]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"projection name {self.name!r} must be 1 to 63 characters: lower-case "
                "letters, digits, '_', '.' or '-', starting with a letter"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"projection {self.name}: version must be an int >= 1")
        if not (isinstance(self.lag_threshold, int | float) and self.lag_threshold > 0) or (
            math.isinf(self.lag_threshold)
        ):
            raise ValueError(
                f"projection {self.name}: lag_threshold is in seconds and must be above 0"
            )
        if not self.handlers:
            raise ValueError(f"projection {self.name} has no handlers: map event classes to them")
        for cls, handler in self.handlers.items():
            if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
                raise ValueError(
                    f"projection {self.name}: handler keys are event classes, not {cls!r}"
                )
            if not callable(handler):
                raise ValueError(
                    f"projection {self.name}: the handler of {cls.__name__} is not callable"
                )
        for what, statements in (("schema", self.schema), ("indexes", self.indexes)):
            if isinstance(statements, str) or not all(isinstance(s, str) for s in statements):
                raise ValueError(
                    f"projection {self.name}: {what} is a list of SQL statements, one per item"
                )
        for statement in self.indexes:
            if not _INDEX.match(statement):
                raise ValueError(
                    f"projection {self.name}: each of indexes is one CREATE INDEX name ON "
                    f"table (...) statement, not {statement[:60]!r}"
                )

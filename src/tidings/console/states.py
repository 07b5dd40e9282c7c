"""The streams page's folds: an aggregate's state now and as of a chosen time, rebuilt by
the library's own repository (``load``: the snapshot it started from and the events it
replayed), from the aggregate classes the console was started with (``--aggregates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

import tidings
from tidings.application.repository import EventSourcedRepository
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.errors import AggregateNotFoundError, ConfigurationError, StorageError

Kind = type[EventSourcedAggregate]
Repository = EventSourcedRepository[EventSourcedAggregate]


@dataclass(frozen=True)
class Folded:
    """An aggregate as one ``load`` rebuilt it: its version, its public state as indented
    JSON, the snapshot's version it started from (0: none) and the events replayed."""

    version: int
    state: str
    snapshot_at: int
    replayed: int


def check(kinds: Any, path: str) -> list[Kind]:
    """``kinds`` (a class, or a list of them) as a list of event-sourced aggregate
    classes with distinct names (the page picks one by name), or a one-line
    ``ConfigurationError``."""
    found: list[Any] = list(kinds) if isinstance(kinds, list | tuple) else [kinds]
    if not found or not all(
        isinstance(k, type) and issubclass(k, EventSourcedAggregate) for k in found
    ):
        raise ConfigurationError(
            f"--aggregates {path} must be an event-sourced aggregate class or a list of them"
        )
    names = [k.__name__ for k in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(
            f"--aggregates {path} names two classes {', '.join(twice)}: the page picks one "
            "by name, so give each a distinct name"
        )
    return found


def guess(kinds: Sequence[Kind], event_types: Iterable[str]) -> str:
    """The one class whose events cover ``event_types``, by name, or "" when there are
    several (or none): the operator picks then."""
    if len(kinds) == 1:
        return kinds[0].__name__
    seen = set(event_types)
    fits = [k for k in kinds if seen <= {e.type_name() for e in k.appliers}]
    return fits[0].__name__ if seen and len(fits) == 1 else ""


def repositories(store: tidings.Store, kinds: Sequence[Kind]) -> dict[str, Repository]:
    """A repository per class, by the class's name, made once: making one registers the
    events its class applies, so a clash of names shows when the console starts."""
    return {kind.__name__: store.repository(kind) for kind in kinds}


def fold(
    by_name: Mapping[str, Repository], name: str, stream_id: str, as_of: datetime | None
) -> Folded:
    """``stream_id`` folded by the class ``name``, now or as of ``as_of``; an unknown class
    or a stream that class cannot fold is a ``ConfigurationError`` that says so."""
    repository = by_name.get(name)
    if repository is None:
        known = ", ".join(by_name)
        raise ConfigurationError(f"no aggregate class is named {name!r} here (known: {known})")
    try:
        loaded = repository.load(stream_id, as_of=as_of)
    except StorageError:
        raise  # the database failed: not a question of which class
    except AggregateNotFoundError as exc:
        raise ConfigurationError(str(exc)) from exc
    except Exception as exc:  # the class's own appliers meeting events they do not expect
        raise ConfigurationError(
            f"stream {stream_id!r} cannot be folded as {name}: {type(exc).__name__}: {exc}; "
            "is it another class's stream?"
        ) from exc
    aggregate = loaded.aggregate
    return Folded(aggregate.version, public_state(aggregate), loaded.snapshot_at, loaded.replayed)


def public_state(aggregate: EventSourcedAggregate) -> str:
    """The instance's attributes without a leading underscore, as indented JSON; what
    JSON cannot hold is shown as its ``str``. Forgotten personal data is what the store
    decoded it as (``[REDACTED]``)."""
    state = {k: v for k, v in sorted(vars(aggregate).items()) if not k.startswith("_")}
    return msgspec.json.format(msgspec.json.encode(state, enc_hook=str), indent=2).decode()

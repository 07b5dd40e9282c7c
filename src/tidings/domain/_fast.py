"""The per-event fast paths, in one place.

Every event recorded, stored, read or decoded passes through a few steps that the plain
idiom makes several times dearer than it needs to be: the generated ``__init__`` of a
frozen dataclass sets each field through ``object.__setattr__``, and
``dataclasses.replace`` builds the object again through that ``__init__``. Each function
here does the same work the cheap way and says why that is safe and what it saves
(instructions counted by ``benchmarks/fastpaths.py``). Nowhere else does tidings go
around a frozen dataclass, so the classes themselves stay plain dataclasses, and
``tests/unit/test_fastpaths.py`` pins that what these build is exactly what the plain
idiom would (equal, hashed, printed, copied and pickled alike, and still frozen).

The rule they all share: they change an object only while nobody else holds it, that is
right after it was made, before it is returned. To everyone else it is frozen.

Standard library only: this is the domain layer, and ``tidings.records`` uses it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, Self, TypeVar

_IN_DICT: dict[type, bool] = {}


def fields_in_dict(cls: type) -> bool:
    """True when every field of ``cls`` lives in the instance ``__dict__`` (no class of
    its MRO declares ``__slots__``), which the tricks below on ``__dict__`` rely on.
    Cached per class: a class's layout never changes once it exists."""
    in_dict = _IN_DICT.get(cls)
    if in_dict is None:
        in_dict = _IN_DICT[cls] = not any("__slots__" in vars(c) for c in cls.__mro__)
    return in_dict


class Stampable(Protocol):
    """An event: it can make a stamped copy of itself the plain way."""

    def stamped(
        self,
        *,
        event_id: str,
        occurred_at: datetime,
        aggregate_id: str,
        aggregate_version: int,
    ) -> Self: ...


E = TypeVar("E", bound=Stampable)


def with_envelope(
    event: E, event_id: str, occurred_at: datetime, aggregate_id: str, aggregate_version: int
) -> E:
    """A copy of ``event`` with these four envelope fields (``Aggregate.record``).

    The plain way, ``dataclasses.replace``, runs the event's ``__init__`` again, one
    ``object.__setattr__`` per field. Here the copy is made without ``__init__``: a copy
    of the payload's ``__dict__`` as it stands (it passed ``__init__`` already, when the
    caller built the event), with the envelope written into it, given whole to a new
    instance. Safe because the new instance has no other holder yet and the caller's
    event is left as it was, as ``replace`` would leave it; a class with ``__slots__``
    anywhere has fields outside ``__dict__`` and takes the plain way. Takes less than
    half the time of ``stamped()`` (``replace`` and the envelope set after it); assigning
    the whole dict costs a third less than ``update()`` on an empty one.
    """
    cls = type(event)
    in_dict = _IN_DICT.get(cls)  # fields_in_dict, inline: this runs for every event
    if in_dict is None:
        in_dict = fields_in_dict(cls)
    if not in_dict:
        return event.stamped(
            event_id=event_id,
            occurred_at=occurred_at,
            aggregate_id=aggregate_id,
            aggregate_version=aggregate_version,
        )
    fields = event.__dict__.copy()
    fields["event_id"] = event_id
    fields["occurred_at"] = occurred_at
    fields["aggregate_id"] = aggregate_id
    fields["aggregate_version"] = aggregate_version
    copy: E = object.__new__(cls)
    object.__setattr__(copy, "__dict__", fields)
    return copy


def set_envelope(
    event: object, event_id: str, occurred_at: datetime, aggregate_id: str, aggregate_version: int
) -> None:
    """Give an event that was just built its envelope, in place (``DomainEvent.stamped``'s
    copy); ``envelope_setter`` is the same, chosen once per class (a decoder's events).

    Safe because the event has no other holder yet; building it again with the envelope
    would cost a second construction of every event read.
    """
    envelope_setter(type(event))(event, event_id, occurred_at, aggregate_id, aggregate_version)


Envelope = Callable[[Any, str, datetime, str, int], None]


def envelope_setter(cls: type) -> Envelope:
    """The function ``set_envelope`` uses for events of ``cls``: four item stores into the
    instance ``__dict__`` where the fields live there (about a fifth of the time of four
    ``object.__setattr__`` calls, each of which looks the attribute up first), else
    ``object.__setattr__`` per field, the way the dataclass's own ``__init__`` sets them.
    A decoder keeps it per class, so reading an event costs one call and no test."""
    return _envelope_in_dict if fields_in_dict(cls) else _envelope_by_setattr


def _envelope_in_dict(
    event: Any, event_id: str, occurred_at: datetime, aggregate_id: str, aggregate_version: int
) -> None:
    fields = event.__dict__
    fields["event_id"] = event_id
    fields["occurred_at"] = occurred_at
    fields["aggregate_id"] = aggregate_id
    fields["aggregate_version"] = aggregate_version


def _envelope_by_setattr(
    event: Any, event_id: str, occurred_at: datetime, aggregate_id: str, aggregate_version: int
) -> None:
    setter = object.__setattr__
    setter(event, "event_id", event_id)
    setter(event, "occurred_at", occurred_at)
    setter(event, "aggregate_id", aggregate_id)
    setter(event, "aggregate_version", aggregate_version)


def set_field(obj: object, name: str, value: object) -> None:
    """Set one field of a frozen dataclass that was just built and has no other holder
    (a decoded event's personal field, opened after decoding): ``object.__setattr__``, as
    its own ``__init__`` does, sparing a second construction of the whole object."""
    object.__setattr__(obj, name, value)


def dict_reader(names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """A function from an object whose fields all live in its ``__dict__`` to the dict of
    ``names`` (the codec's payload of an event, before it is encoded).

    Compiled once per class: a dict display of the names costs half what a comprehension
    over them does, and it runs for every event written. Safe because it only reads, and
    the source holds nothing but the names as string literals (``repr``), so any field
    name is safe in it; the caller checks that the fields do live in ``__dict__``.
    """
    items = ", ".join(f"{name!r}: d[{name!r}]" for name in names)
    source = f"def payload(event):\n    d = event.__dict__\n    return {{{items}}}\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - the source is built just above
    reader: Callable[[Any], dict[str, Any]] = namespace["payload"]
    return reader


def frozen_builder(cls: type[Any]) -> Callable[..., Any]:
    """A function taking every field of ``cls`` (a frozen dataclass with slots), in order,
    and returning the instance ``cls(...)`` would (``tidings.records.new_record``).

    ``cls(...)`` sets each field through ``object.__setattr__`` (frozen); this fills an
    unfrozen twin, a class of the same ``__slots__`` and nothing else, with plain
    attribute stores, then sets its ``__class__`` to ``cls``. Python allows that between
    classes of the same layout, and from then on the object is a ``cls`` like any other:
    frozen, equal, hashed and pickled as one. Safe because no one holds the object while
    it is a twin. Saves about three quarters of building a record, which every event
    written or read goes through. A new field of ``cls`` is taken up on its own (the
    function is generated from the fields); a class without slots, not frozen, or with a
    ``__post_init__`` the twin would skip, is refused here, at import time.
    """
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"frozen_builder needs a frozen dataclass; {cls.__qualname__} is not")
    names = tuple(f.name for f in dataclasses.fields(cls))
    slots = vars(cls).get("__slots__")
    if slots is None or tuple(slots) != names:
        raise TypeError(
            f"frozen_builder needs a dataclass with slots=True whose own slots are its "
            f"fields; {cls.__qualname__} has {slots!r}"
        )
    if cls.__mro__[1] is not object:
        raise TypeError(f"frozen_builder needs a class of its own; {cls.__qualname__} inherits")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__} has a __post_init__, which the builder would skip")
    twin = type(f"_Unfrozen{cls.__name__}", (), {"__slots__": slots})
    # The source holds nothing but the field names, which dataclasses made sure are
    # identifiers; the function is the hand-written one it replaces, store for store.
    lines = [f"def new_{cls.__name__}({', '.join(names)}):", "    made = Twin()"]
    lines += [f"    made.{name} = {name}" for name in names]
    lines += ["    made.__class__ = Made", "    return made"]
    namespace: dict[str, Any] = {"Twin": twin, "Made": cls}
    exec("\n".join(lines), namespace)  # noqa: S102 - the source is built just above
    builder: Callable[..., Any] = namespace[f"new_{cls.__name__}"]
    builder.__doc__ = f"``{cls.__qualname__}(...)`` for the hot paths (see frozen_builder)."
    return builder


def slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """The setter of slot ``name`` of a frozen dataclass with slots
    (``tidings.records.place``): sets that one field of an instance without going
    through the frozen ``__setattr__``.

    Safe only on an instance nobody else holds yet: a store gives records it has just
    built their global position this way, sparing a second construction of every record
    written. Called straight from a loop it costs one C call per record.
    """
    slot = vars(cls).get(name)
    if slot is None or type(slot).__name__ != "member_descriptor":
        raise TypeError(f"{cls.__qualname__}.{name} is not a slot of that class")
    setter: Callable[[Any, Any], None] = slot.__set__
    return setter

"""Event type registry and the JSON codec (msgspec): the only way events reach bytes."""

from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry

__all__ = ["EventRegistry", "JsonCodec"]

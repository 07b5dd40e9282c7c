"""Event type registry, upcasters and the JSON codecs (msgspec): the only way to bytes."""

from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry, Upcaster
from tidings.serialization.snapshots import SnapshotCodec

__all__ = ["EventRegistry", "JsonCodec", "SnapshotCodec", "Upcaster"]

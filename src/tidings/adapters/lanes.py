"""What the outbox adapters share about lanes."""

from __future__ import annotations

from tidings.errors import ConfigurationError


def lanes_mismatch(existing: int, wanted: int) -> ConfigurationError:
    """The error for a relay started with another lane count than the running ones."""
    return ConfigurationError(
        f"the outbox is split into {existing} lanes and relays are running on them; this "
        f"relay was started with {wanted}: give every relay the same --lanes, or stop them "
        "all to change it"
    )

"""What every lease adapter shares: the fair share, and the checks of its arguments."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.errors import ConfigurationError


def fair_share(owner: str, live: Sequence[str], count: int) -> int:
    """How many of ``count`` slots ``owner`` should hold among the ``live`` owners.

    Every owner gets ``count // n``; the first ``count % n`` of them in name order get one
    more, so the shares add up to ``count`` exactly: no slot is left without an owner and
    a fifth owner of eight slots gets one (rounding every share up would leave it none).
    Every owner computes the same shares from the same heartbeats.
    """
    ranked = sorted(set(live) | {owner})
    base, extra = divmod(count, len(ranked))
    return base + (1 if ranked.index(owner) < extra else 0)


def check_lease(owner: str, name: str, count: int, ttl: float) -> None:
    """Refuse arguments no lease can be made of, saying which and what to give."""
    if not owner or not name:
        raise ConfigurationError(
            f"a lease needs an owner and a set name (got owner {owner!r}, name {name!r}): "
            "give both as non-empty strings"
        )
    if count < 1:
        raise ConfigurationError(
            f"the lease set {name!r} was asked for with {count} slots: give at least 1"
        )
    if not ttl > 0:
        raise ConfigurationError(
            f"a lease of {name!r} was asked for {ttl} seconds: give a positive time to live"
        )

"""Readiness checks for ``/readyz``: each says None when ready, else what is wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tidings.ports import OUTBOX_LANES
from tidings.workers.relay import Relay

Check = Callable[[], str | None]
"""A readiness check: None when ready, else what is wrong (one line)."""


def database_answers(database: Any) -> Check:
    """Ready while the database answers a trivial query."""

    def check() -> str | None:
        try:
            database.query("SELECT 1")
        except Exception as exc:  # any failure means not ready; say which
            return f"the database does not answer: {type(exc).__name__}: {exc}"
        return None

    return check


def flowing(stats: Any) -> Check:
    """Ready unless the worker is paused on an outage (its stats' ``outage``): the broker
    or the database failed its last pass."""

    def check() -> str | None:
        return f"paused on an outage: {stats.outage}" if stats.outage else None

    return check


def holds_lanes(relay: Relay, database: Any) -> Check:
    """Ready while the relay holds at least one outbox lane whose lease has not run out,
    as the lanes table says now (a lease taken over or expired counts as lost)."""
    mark = "%s" if database.dialect == "postgresql" else "?"
    sql = (
        f"SELECT count(*) FROM {database.tables['leases']} WHERE name = {mark} "
        f"AND owner = {mark} AND lease_until > {mark}"
    )

    def check() -> str | None:
        try:
            held = database.query(sql, (OUTBOX_LANES, relay.relay_id, time.time()))[0][0]
        except Exception as exc:  # any failure means not ready; say which
            return f"the database does not answer: {type(exc).__name__}: {exc}"
        return None if held else f"relay {relay.relay_id} holds no outbox lane"

    return check


def holds_partitions(consumer: Any) -> Check:
    """Ready while a partitioned consumer runs at least one partition."""

    def check() -> str | None:
        return None if consumer.held else f"consumer {consumer.name} holds no partition"

    return check

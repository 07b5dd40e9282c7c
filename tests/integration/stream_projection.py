"""The counters' totals as ``tidings consume --handlers`` takes them: a stream projection
(its table in the consumer's schema, first on its search path).

With ``TIDINGS_TEST_DIE_AFTER=N`` the process SIGKILLs itself once the transaction that
applied its N-th event has committed: after the commit, before the consumer's ack, the
one moment a crash makes the broker deliver what is already applied."""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.contract.stream_kit import totals_projection
from tidings.application.projections import Projection

_totals = totals_projection()
_applied = [0]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counted(uow: Any, event: Any) -> None:
    [handler] = _totals.handlers.values()
    handler(uow, event)
    _applied[0] += 1
    if _applied[0] == int(os.environ.get("TIDINGS_TEST_DIE_AFTER", "0")):
        uow.transaction.on_commit(_die)


projection = Projection(_totals.name, dict.fromkeys(_totals.handlers, _counted), _totals.schema)

"""Handlers for the consumer order tests, loaded by ``tidings consume --handlers``: each
Counted event is recorded with its aggregate and version in ``seen_versions`` (a table the
test makes), in the order the handler saw them."""

from __future__ import annotations

from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.testing.contract import Counted

HANDLER = "order-check.record"


def record(event: Counted, uow: UnitOfWork) -> None:
    """Append (aggregate, version) to the record, in the handler's transaction."""
    uow.execute(
        "INSERT INTO seen_versions (aggregate_id, version) VALUES (:aggregate, :version)",
        {"aggregate": event.aggregate_id, "version": event.aggregate_version},
    )


handlers = Handlers()
handlers.add(Counted, HANDLER, record)

"""CQRS projections: read models built from the global event log (see docs/cqrs.md)."""

from tidings.application.projections.definition import Handler, Projection
from tidings.application.projections.from_stream import SourceStatus, SourceToken, source_token
from tidings.application.projections.rebuild import Rebuild, VerifyError
from tidings.application.projections.runner import ProjectionRunner
from tidings.application.projections.status import ProjectionStatus

__all__ = [
    "Handler",
    "Projection",
    "ProjectionRunner",
    "ProjectionStatus",
    "Rebuild",
    "SourceStatus",
    "SourceToken",
    "VerifyError",
    "source_token",
]

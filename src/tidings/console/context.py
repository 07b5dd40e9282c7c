"""What every page and action of the console shares: the store, the guard, the templates."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

import tidings
from tidings.application.handling import Handlers
from tidings.application.projections import Projection
from tidings.console.lag import LagHistory
from tidings.console.rebuilds import Rebuilds
from tidings.console.security import CSRF_FIELD, Guard
from tidings.console.states import Kind, Repository, repositories
from tidings.domain.saga import SagaDefinition
from tidings.domain.saga_versions import SagaUpcaster

HERE = Path(__file__).parent
log = logging.getLogger(__name__)


def when(at: float) -> str:
    """A timestamp as the CLI prints it (UTC, milliseconds)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds") if at else "-"


def _templates() -> jinja2.Environment:
    # autoescape=True everywhere: event bodies, reasons and notes are user data.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    return env


@dataclass
class Console:
    """The console's one store and settings: ``by`` names the operator on what they do;
    ``definitions``, ``handlers`` and ``projections`` let actions run saga steps, inbox
    handlers and rebuilds, as the CLI's options of the same names do. ``inbox_stores``
    are other services' databases, where an event's path goes on (``tidings trace``'s
    ``--inbox-db``). ``aggregates`` are the event-sourced classes the streams page folds
    a stream's state with (``--aggregates``)."""

    store: tidings.Store
    guard: Guard
    by: str
    definitions: list[SagaDefinition | SagaUpcaster] = field(default_factory=list)
    handlers: Handlers | None = None
    asyncapi: dict[str, Any] | None = None
    projections: list[Projection] = field(default_factory=list)
    inbox_stores: list[tidings.Store] = field(default_factory=list)
    aggregates: list[Kind] = field(default_factory=list)
    rebuilds: Rebuilds = field(default_factory=Rebuilds)
    rebuild_batch: int = 5000
    lag: LagHistory = field(default_factory=LagHistory)
    sample_every: float = 10.0
    templates: jinja2.Environment = field(default_factory=_templates)
    repositories: dict[str, Repository] = field(init=False)

    def __post_init__(self) -> None:
        self.repositories = repositories(self.store, self.aggregates)

    def page(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        """Render a page with what every page needs (the CSRF token, the notice)."""
        html = self.templates.get_template(template).render(
            csrf_field=CSRF_FIELD,
            csrf=self.guard.csrf(),
            notice=request.query_params.get("notice", ""),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html)

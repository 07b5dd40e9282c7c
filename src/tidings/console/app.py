"""The console's pages (GET, never changing anything) and its routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tidings.cli.options import outbox_of
from tidings.cli.trace import describe
from tidings.console import actions, lag, reads, states, streams
from tidings.console.context import HERE, Console
from tidings.console.security import TokenMiddleware
from tidings.errors import ConfigurationError
from tidings.observability.trail import check_event_id, follow

View = Callable[[Console, Request], Response]


def overview(console: Console, request: Request) -> Response:
    """Backlog, dead letters, sagas by state, projections, workers."""
    return console.page(request, "overview.html", o=reads.overview(console.store))


def overview_numbers(console: Console, request: Request) -> Response:
    """The overview's figures as JSON, for the page's refresh and for scripts."""
    found = reads.overview(console.store)
    rebuilds = {f"rebuild.{job.name}": job.describe() for job in console.rebuilds.jobs()}
    return JSONResponse(
        {
            "numbers": {**found.numbers(), **rebuilds},
            "projections": [reads.as_json(p) for p in found.projections],
        }
    )


def dead_letters(console: Console, request: Request) -> Response:
    """Outbox and inbox dead letters, bodies pretty-printed."""
    store = console.store
    return console.page(
        request,
        "dead_letters.html",
        outbox=outbox_of(store).dead_letters(reads.LIST_LIMIT),
        inbox=store.inbox.dead_letters(reads.LIST_LIMIT) if store.inbox else [],
        pretty=reads.pretty,
        can_retry_inbox=console.handlers is not None,
    )


def confirm_purge(console: Console, request: Request) -> Response:
    """The confirmation step before dead letters are deleted for good."""
    kind = request.path_params["kind"]
    ids = request.query_params.getlist("id")
    everything = request.query_params.get("all") == "1"
    if not ids and not everything:
        raise ConfigurationError("say which dead letters to purge")
    return console.page(request, "confirm_purge.html", kind=kind, ids=ids, everything=everything)


def sagas(console: Console, request: Request) -> Response:
    """Sagas by state and type, those needing intervention first."""
    state = request.query_params.get("state") or None
    saga_type = request.query_params.get("type") or None
    found = reads.sagas(console.store, state, saga_type)
    return console.page(
        request,
        "sagas.html",
        sagas=found,
        states=reads.SAGA_STATES,
        state=state or "",
        saga_type=saga_type or "",
    )


def saga(console: Console, request: Request) -> Response:
    """A saga's state and timeline, with the operator's actions."""
    saga_id = request.path_params["saga_id"]
    orchestrator = console.store.sagas()
    found = orchestrator.get(saga_id)
    if found is None:
        return console.page(request, "missing.html", what=f"no saga has id {saga_id!r}")
    return console.page(
        request,
        "saga.html",
        saga=found,
        history=orchestrator.history(saga_id),
        can_run_steps=bool(console.definitions),
    )


def projections(console: Console, request: Request) -> Response:
    """Each projection's position, head, lag and state; a rebuild's progress; the
    actions: pause, resume, retry, skip, rebuild, rollback."""
    known = [p.name for p in console.projections]
    return console.page(
        request,
        "projections.html",
        projections=reads.projection_rows(reads.projections(console.store), known),
        jobs={job.name: job for job in console.rebuilds.jobs()},
        known=known,
        done=reads.done,
        pace=reads.pace,
    )


def projection_lag(console: Console, request: Request) -> Response:
    """A chart of one projection's lag (in events) since the console started, up to an hour."""
    name = request.path_params["name"]
    samples = console.lag.of(name)
    return console.page(request, "lag.html", name=name, samples=samples, chart=lag.chart(samples))


def event(console: Console, request: Request) -> Response:
    """Where one event is: written, its outbox row, which handlers took it, on the
    console's database and the other services' (``tidings trace`` with ``--inbox-db``)."""
    event_id = request.query_params.get("id", "")
    trails = []
    if event_id:
        check_event_id(event_id)
        trails = [follow(store, event_id) for store in (console.store, *console.inbox_stores)]
    return console.page(
        request,
        "event.html",
        event_id=event_id,
        trails=trails,
        lines=[line for trail in trails for line in describe(trail)],
        found=any(t.found for t in trails),
        elsewhere=len(console.inbox_stores),
    )


def stream(console: Console, request: Request) -> Response:
    """An aggregate's events, a page at a time, now or up to a chosen time; with
    ``--aggregates``, its state folded now and then."""
    query = request.query_params
    stream_id, at = query.get("id", ""), query.get("at", "")
    shown: dict[str, object] = {
        "stream_id": stream_id,
        "at": at,
        "found": None,
        "kinds": [kind.__name__ for kind in console.aggregates],
        "kind": query.get("aggregate", ""),
        "now": None,
        "then": None,
        "state_error": "",
    }
    if stream_id.strip():
        try:
            as_of = streams.moment(at)
            found = streams.read(
                console.store.events, stream_id, as_of, streams.first_version(query.get("from", ""))
            )
        except ConfigurationError as exc:  # said on the page, beside the form to mend it
            shown["error"] = str(exc)
        else:
            shown["found"] = found
            if console.aggregates:
                shown.update(_states(console, stream_id, as_of, str(shown["kind"]), found))
    return console.page(request, "streams.html", pretty=reads.pretty, **shown)


def _states(
    console: Console, stream_id: str, as_of: datetime | None, kind: str, found: streams.StreamPage
) -> dict[str, object]:
    """The stream folded now and, given a time, then; the class is the one asked for,
    else the one its events belong to; a fold that cannot be done is said on the page."""
    kinds = console.aggregates
    kind = kind or states.guess(kinds, (e.event_type for e in found.events))
    if not kind:
        return {}
    try:
        now = states.fold(console.repositories, kind, stream_id, None)
        then = states.fold(console.repositories, kind, stream_id, as_of) if as_of else None
    except ConfigurationError as exc:
        return {"kind": kind, "state_error": str(exc)}
    return {"kind": kind, "now": now, "then": then}


def asyncapi(console: Console, request: Request) -> Response:
    """The service's AsyncAPI document: its channels, and the document itself."""
    doc = console.asyncapi
    if doc is None:
        raise ConfigurationError(
            "no AsyncAPI document: start the console with --registry module:attr and "
            "--to nats://...|amqp://... (and --handlers for what it consumes)"
        )
    if request.url.path.endswith(".json"):
        return JSONResponse(doc)
    operations: dict[str, list[str]] = {}
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        operations.setdefault(channel, []).append(operation["action"])
    return console.page(
        request,
        "asyncapi.html",
        doc=doc,
        operations=operations,
        text=json.dumps(doc, indent=2),
    )


def create_app(console: Console) -> Starlette:
    """The console's ASGI app over ``console.store``; every request passes the token check."""

    def page(view: View) -> actions.Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return view(console, request)
            except ConfigurationError as exc:
                return console.page(request, "missing.html", what=str(exc))

        return endpoint

    def act(fn: actions.Action) -> actions.Endpoint:
        return actions.action(console, fn)

    routes = [
        Route("/", page(overview)),
        Route("/api/overview", page(overview_numbers)),
        Route("/dead-letters", page(dead_letters)),
        Route("/dead-letters/{kind:str}/purge", page(confirm_purge)),
        Route("/dead-letters/outbox/retry", act(actions.outbox_retry), methods=["POST"]),
        Route("/dead-letters/outbox/purge", act(actions.outbox_purge), methods=["POST"]),
        Route("/dead-letters/inbox/retry", act(actions.inbox_retry), methods=["POST"]),
        Route("/dead-letters/inbox/purge", act(actions.inbox_purge), methods=["POST"]),
        Route("/sagas", page(sagas)),
        Route("/sagas/{saga_id:str}", page(saga)),
        Route("/sagas/{saga_id:str}/{verb:str}", act(actions.saga_action), methods=["POST"]),
        Route("/projections", page(projections)),
        Route("/events", page(event)),
        Route("/streams", page(stream)),
        Route("/asyncapi", page(asyncapi)),
        Route("/asyncapi.json", page(asyncapi)),
        Route("/projections/{name:str}/lag", page(projection_lag)),
        Route("/projections/{name:str}/retry", act(actions.projection_retry), methods=["POST"]),
        Route("/projections/{name:str}/skip", act(actions.projection_skip), methods=["POST"]),
        Route("/projections/{name:str}/pause", act(actions.projection_pause), methods=["POST"]),
        Route("/projections/{name:str}/rebuild", act(actions.projection_rebuild), methods=["POST"]),
        Route(
            "/projections/{name:str}/rollback", act(actions.projection_rollback), methods=["POST"]
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TokenMiddleware, guard=console.guard)]
    return Starlette(routes=routes, middleware=middleware, lifespan=sampling(console))


def sampling(console: Console) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: sample the projections' lag while it serves."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(
            console.lag.sample(lambda: reads.projections(console.store), console.sample_every)
        )
        try:
            yield
        finally:
            task.cancel()
            console.rebuilds.stop()  # each goes on from its checkpoint when started again

    return lifespan

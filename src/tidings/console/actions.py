"""The console's actions: POST forms with the CSRF token, each logged and recorded where
the CLI records it (saga history, projection skips and pauses), each calling what the
CLI calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import closing
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from tidings.application.projections import Projection
from tidings.application.projections.runner import resumes
from tidings.cli import inbox
from tidings.cli.options import outbox_of
from tidings.cli.sagas import load_definitions
from tidings.console.context import Console, log
from tidings.console.security import CSRF_FIELD
from tidings.errors import ConfigurationError, TidingsError

Done = tuple[str, str]  # what happened, and the page to show next
Action = Callable[[Console, Request, FormData], Done]
Endpoint = Callable[[Request], Awaitable[Response]]


def action(console: Console, fn: Action) -> Endpoint:
    """An endpoint that checks the form's CSRF token, runs ``fn``, logs what it did, and
    redirects to the page ``fn`` names with its outcome as a notice."""

    async def endpoint(request: Request) -> Response:
        form = await request.form()
        if not console.guard.csrf_ok(form.get(CSRF_FIELD)):
            log.warning("refused %s %s: no valid CSRF token", request.method, request.url.path)
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
        try:
            said, then = fn(console, request, form)
        except TidingsError as exc:
            said, then = f"error: {exc}", request.headers.get("referer", "/")
        log.info("%s by %s: %s", request.url.path, console.by, said)
        sep = "&" if "?" in then else "?"
        return RedirectResponse(f"{then}{sep}notice={quote(said)}", status_code=303)

    return endpoint


def _ids(form: FormData) -> list[str] | None:
    """The dead letters a form names, or None for all (``all=1``)."""
    if form.get("all") == "1":
        return None
    ids = [str(v) for v in form.getlist("id") if str(v)]
    if not ids:
        raise ConfigurationError("say which dead letters: tick some, or use the 'all' button")
    return ids


def outbox_retry(console: Console, request: Request, form: FormData) -> Done:
    """Put dead letters back in the outbox; the relay publishes them first, in order."""
    moved = outbox_of(console.store).retry_dead(_ids(form))
    return f"{moved} dead letter(s) back in the outbox", "/dead-letters"


def outbox_purge(console: Console, request: Request, form: FormData) -> Done:
    """Delete outbox dead letters for good, once the confirmation page said yes."""
    _confirmed(form)
    gone = outbox_of(console.store).purge_dead(_ids(form))
    return f"{gone} outbox dead letter(s) deleted", "/dead-letters"


def inbox_retry(console: Console, request: Request, form: FormData) -> Done:
    """Handle inbox dead letters again with the console's ``--handlers``."""
    if console.handlers is None:
        raise ConfigurationError(
            "retrying inbox dead letters runs your handlers: start the console with "
            "--handlers package.module:attribute"
        )
    return inbox.retry_dead(console.store, console.handlers, _numbers(form)), "/dead-letters"


def inbox_purge(console: Console, request: Request, form: FormData) -> Done:
    """Delete inbox dead letters for good, once the confirmation page said yes."""
    _confirmed(form)
    gone = inbox.purge_dead(console.store, _numbers(form))
    return f"{gone} inbox dead letter(s) deleted", "/dead-letters"


def _numbers(form: FormData) -> list[int] | None:
    ids = _ids(form)
    try:
        return None if ids is None else [int(i) for i in ids]
    except ValueError:
        raise ConfigurationError(f"inbox dead letter ids are numbers, not {ids}") from None


def _confirmed(form: FormData) -> None:
    if form.get("confirm") != "yes":
        raise ConfigurationError("purging needs the confirmation: use the purge page")


def saga_action(console: Console, request: Request, form: FormData) -> Done:
    """retry, compensate or resolve a saga, recorded with who and why on its history."""
    saga_id, verb = request.path_params["saga_id"], request.path_params["verb"]
    if verb not in ("retry", "compensate", "resolve"):
        raise ConfigurationError(f"no saga action {verb!r}: retry, compensate or resolve")
    why = str(form.get("note", "")).strip()
    if verb == "resolve" and not why:
        raise ConfigurationError("resolving needs a note: say what was done by hand")
    if verb != "resolve" and not console.definitions:
        load_definitions(None, needed=True)  # says how to name them
    result = console.store.sagas(console.definitions).operate(saga_id, verb, console.by, why)
    return f"saga {saga_id}: {verb} done, now {result.state}", f"/sagas/{quote(saga_id)}"


def projection_retry(console: Console, request: Request, form: FormData) -> Done:
    """Resume a paused projection: it applies the failed event again first."""
    name = request.path_params["name"]
    with closing(console.store.projections()) as runner:
        found = runner.retry(name)
    return f"projection {name}: resumes {resumes(found)} when its runner looks", "/projections"


def projection_pause(console: Console, request: Request, form: FormData) -> Done:
    """Hold a projection by hand; its runners leave it alone until it is resumed. Who and
    why are kept on its checkpoint, as ``tidings projections pause`` keeps them."""
    name = request.path_params["name"]
    note = str(form.get("note", "")).strip()
    with closing(console.store.projections()) as runner:
        found = runner.pause(name, console.by, note)
    return f"projection {name}: paused at position {found.position}", "/projections"


def _projection(console: Console, name: str, doing: str) -> Projection:
    """The code of projection ``name``, from the console's ``--projections``."""
    found = [p for p in console.projections if p.name == name]
    if not found:
        given = ", ".join(p.name for p in console.projections)
        raise ConfigurationError(
            f"{doing} {name!r} needs its code: start the console with --projections "
            f"package.module:attr naming it"
            + (f" (the console was given {given})" if given else "")
        )
    return found[0]


def projection_rebuild(console: Console, request: Request, form: FormData) -> Done:
    """Build the projection's version in the console's code into shadow tables, in a
    thread, and swap it in once caught up (``tidings projections rebuild``)."""
    name = request.path_params["name"]
    projection = _projection(console, name, "rebuilding")
    shadow = console.rebuilds.start(console.store, projection, console.by, console.rebuild_batch)
    return (
        f"projection {name}: rebuilding version {projection.version} from position "
        f"{shadow.position}; the page shows its progress",
        "/projections",
    )


def projection_rollback(console: Console, request: Request, form: FormData) -> Done:
    """Swap the version the last rebuild replaced back in (``tidings projections
    rollback``); the rebuilt tables are dropped."""
    name = request.path_params["name"]
    projection = _projection(console, name, "rolling back")
    if console.rebuilds.running(name):
        raise ConfigurationError(f"projection {name!r} is being rebuilt: wait for the end")
    back = console.store.rebuild(projection).rollback()
    return (
        f"projection {name}: version {back.version} is back at position {back.position}; "
        "run its runner with that version's code",
        "/projections",
    )


def projection_skip(console: Console, request: Request, form: FormData) -> Done:
    """Pass over the one event a paused projection failed on; the skip is recorded."""
    name = request.path_params["name"]
    try:
        position = int(str(form.get("position", "")))
    except ValueError:
        raise ConfigurationError("skip needs the position the projection paused on") from None
    note = str(form.get("note", ""))
    with closing(console.store.projections()) as runner:
        skipped = runner.skip(name, position, console.by, note)
    return f"projection {name}: skipped position {skipped.position}", "/projections"

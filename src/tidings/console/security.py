"""The console's guards: an access token on every request, a CSRF token on every form.

Without a token the console answers only requests addressed to a loopback host, so a web
page elsewhere cannot reach it through DNS rebinding. The CSRF token is an HMAC of a
secret made when the process starts: a page of another origin cannot read it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "tidings_console_token"  # noqa: S105 - the cookie's name, not a token
CSRF_FIELD = "csrf"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


class Guard:
    """Per-process secrets: the CSRF token forms carry, checked on every action."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._secret = secrets.token_bytes(32)

    def csrf(self) -> str:
        """The token every POST form carries."""
        return hmac.new(self._secret, b"console form", hashlib.sha256).hexdigest()

    def csrf_ok(self, sent: object) -> bool:
        """Whether a form's CSRF field is this process's token."""
        return isinstance(sent, str) and hmac.compare_digest(sent, self.csrf())

    def token_ok(self, sent: str | None) -> bool:
        """Whether a request carries the access token (always, when none is set)."""
        if self.token is None:
            return True
        return sent is not None and hmac.compare_digest(sent.encode(), self.token.encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _sent_token(scope: Scope) -> tuple[str | None, bool]:
    """The token a request carries (bearer header, cookie or ``?token=``), and whether
    it came in the query string (then it is moved into a cookie)."""
    auth = _header(scope, b"authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    if "token" in query:
        return query["token"][0], True
    cookie: SimpleCookie = SimpleCookie(_header(scope, b"cookie") or "")
    morsel = cookie.get(TOKEN_COOKIE)
    return (morsel.value if morsel else None), False


async def _refuse(send: Send, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})


class TokenMiddleware:
    """Refuses a request without the access token (401), or without one addressed to a
    loopback host when no token is set (403); a token given as ``?token=`` is moved to
    an HttpOnly cookie by a redirect, so it leaves the address bar and the history."""

    def __init__(self, app: App, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.guard.token is None:
            host = (_header(scope, b"host") or "").rsplit(":", 1)[0]
            if host not in LOOPBACK_HOSTS:
                await _refuse(
                    send,
                    403,
                    f"host {host!r} refused: the console has no token, "
                    "so it answers only 127.0.0.1 and localhost",
                )
                return
            await self.app(scope, receive, send)
            return
        sent, in_query = _sent_token(scope)
        if not self.guard.token_ok(sent):
            await _refuse(send, 401, "the console needs its token: open it with ?token=...")
            return
        if in_query:
            await self._into_cookie(scope, send)
            return
        await self.app(scope, receive, send)

    async def _into_cookie(self, scope: Scope, send: Send) -> None:
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        query.pop("token", None)
        rest = urlencode(query, doseq=True)
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{TOKEN_COOKIE}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b""})

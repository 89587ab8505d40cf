"""The app's guards: security headers, request size limits, CSRF tokens, login throttling and
escaped rendering of model text."""

from __future__ import annotations

import datetime as dt
import secrets

from markdown_it import MarkdownIt
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse

from rlxf.feedback.store import LoginAttempt, now

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""No inline script or style anywhere: an injected <script> or onerror= does not run."""

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


class BodySizeLimit:
    """Refuses (413) a request whose body is larger than ``limit`` bytes, declared or streamed,
    before any route sees it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large()(scope, receive, send)
        body, more = [], True
        while more:
            message = await receive()
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > self.limit:
                return await _too_large()(scope, receive, send)
        whole = b"".join(body)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": whole, "more_body": False}

        return await self.app(scope, replay, send)


def _too_large() -> PlainTextResponse:
    # answered before the app (and its header middleware) runs, so it sets the headers itself
    return PlainTextResponse("request body too large", 413, headers=HEADERS)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Compared as bytes: compare_digest refuses non-ASCII strings, and a sender picks ``given``."""
    if not expected or not given:
        return False
    return secrets.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


LOGIN_ATTEMPTS, LOGIN_WINDOW_SECONDS = 5, 300
"""Failed logins allowed per account and client address in a window, before refusing (429)."""


class LoginThrottle:
    """Login tries per key (account and client address) in a sliding window, kept in the store
    (``login_attempts``), so every worker and every app on one store shares the count.

    A try is written as a failure *before* the password is checked, in a transaction of its
    own, and the count read after that commit includes every try committed before it: of any
    number of simultaneous tries, the k-th to commit sees at least k, so at most ``attempts``
    of them reach the password check. A successful login clears the key."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window_seconds: float = LOGIN_WINDOW_SECONDS):
        self.attempts, self.window_seconds = attempts, window_seconds

    def admits(self, session: Session, key: str) -> bool:
        """Records a try for ``key`` (committing ``session``); whether it is within the window's tries."""
        since = now() - dt.timedelta(seconds=self.window_seconds)
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < since))
        session.add(LoginAttempt(key=key, at=now()))
        session.commit()
        tries = session.scalar(
            select(func.count(LoginAttempt.id)).where(LoginAttempt.key == key, LoginAttempt.at >= since)
        )
        session.commit()
        return tries <= self.attempts

    def forget(self, session: Session, key: str) -> None:
        """A successful login starts the count afresh (committed with the caller's session)."""
        session.execute(delete(LoginAttempt).where(LoginAttempt.key == key))


_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")


def render_markdown(text: str) -> str:
    """Model or imported text as HTML: markdown with raw HTML escaped, images off and unsafe
    link schemes (javascript:, data:) refused by markdown-it's link check."""
    return _markdown.render(text)

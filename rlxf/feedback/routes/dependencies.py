"""What the routes share, injected the FastAPI way: the app's state (on ``app.state``), a
database session per request, the caller (session cookie with its CSRF token, or an API token),
the administrator check, the project lookup among the caller's own, and page rendering."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from rlxf import __version__
from rlxf.feedback import admin
from rlxf.feedback.security import LoginThrottle, new_csrf_token, render_markdown, same_token
from rlxf.feedback.store import Membership, Project, Store, User

TEMPLATES = Path(__file__).parent.parent / "templates"
MAX_ID = 2**63 - 1
"""The largest id a database integer column holds; a larger one is a 422, not a 500."""
ProjectId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass
class AppState:
    """What the routes of one app share; `create_app` builds it and keeps it on
    ``app.state.feedback``, so two apps in one process (tests) share nothing."""

    store: Store
    templates: Jinja2Templates
    login_throttle: LoginThrottle
    rng: random.Random
    """Picks items and the order responses are shown in."""
    import_hosts: list[str]
    """Hosts that item files may be imported from by URL."""
    import_timeout_seconds: float
    """Longest an import by URL may take, from connecting to the last byte."""
    max_body_bytes: int
    """Largest request accepted, and largest file imported by URL."""


def page_templates() -> Jinja2Templates:
    """The page templates, with model text rendered through the safe markdown filter."""
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters["markdown"] = render_markdown
    return templates


def shared(request: Request) -> AppState:
    return request.app.state.feedback


Shared = Annotated[AppState, Depends(shared)]


def database(request: Request) -> Iterator[Session]:
    """A session per request; a route that writes commits before it answers, so an
    acknowledged write is stored; anything not committed is rolled back."""
    session = shared(request).store.new_session()
    try:
        yield session
    finally:
        session.close()


Database = Annotated[Session, Depends(database)]


async def csrf_given(request: Request) -> str | None:
    """The CSRF token a request carries: header X-CSRF-Token, or a form's csrf field."""
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        given = (await request.form()).get("csrf")
    return given if isinstance(given, str) else None


def caller(request: Request, csrf: Annotated[str | None, Depends(csrf_given)], session: Database) -> User:
    """The logged-in user (session cookie) or the bearer of an API token; writes by
    session must carry its CSRF token."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        user = admin.user_by_token(session, authorization[7:].strip())
        if user is None:
            raise HTTPException(401, "unknown token")
        return user
    user = session.get(User, request.session.get("user_id", 0))
    if user is None or request.session.get("generation") != user.session_generation:
        raise HTTPException(401, "log in first")  # never logged in, or logged out since
    if request.method not in ("GET", "HEAD") and not same_token(request.session.get("csrf"), csrf):
        raise HTTPException(403, "missing or wrong CSRF token")
    return user


Caller = Annotated[User, Depends(caller)]


def administrator(user: Caller) -> User:
    if user.role != "admin":
        raise HTTPException(403, "admins only")
    return user


Administrator = Annotated[User, Depends(administrator)]


def project_of(session: Session, user: User, project_id: int) -> Project:
    """The project when ``user`` is a member (admins are members of all); 404 otherwise, so
    an outsider cannot tell a project that exists from one that does not."""
    project = session.get(Project, project_id)
    member = project is not None and (
        user.role == "admin" or session.get(Membership, (project_id, user.id)) is not None
    )
    if not member:
        raise HTTPException(404, f"no project {project_id}")
    return project


def page(request: Request, name: str, **context) -> HTMLResponse:
    """The template ``name`` rendered with ``context``, the session's CSRF token (made on the
    first page a visitor sees, so the login form carries one) and the app's version."""
    request.session.setdefault("csrf", new_csrf_token())
    return shared(request).templates.TemplateResponse(
        request, name, {"csrf": request.session["csrf"], "version": __version__, **context}
    )

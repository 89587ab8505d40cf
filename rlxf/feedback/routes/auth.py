"""Logging in and out with a password; the session cookie carries the user and a CSRF token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from rlxf.feedback import admin
from rlxf.feedback.routes.dependencies import Caller, Database, Shared, page
from rlxf.feedback.security import new_csrf_token, same_token
from rlxf.feedback.store import User

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return page(request, "login.html", error=None)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf: Annotated[str, Form(max_length=128)],
    session: Database,
    state: Shared,
):
    """Starts a fresh session for the right name and password; after too many failed tries
    for one account from one address, refuses (429) until the window has passed."""
    if not same_token(request.session.get("csrf"), csrf):
        raise HTTPException(403, "missing or wrong CSRF token")
    # the socket's peer: X-Forwarded-For counts only from the proxies `rlxf serve` trusts
    attempt = f"{name}|{request.client.host if request.client else ''}"
    if not state.login_throttle.admits(session, attempt):
        raise HTTPException(429, "too many failed logins; try again in a few minutes")
    user = session.scalar(select(User).where(User.name == name))
    if not admin.check_password(user, password):
        return page(request, "login.html", error="Wrong name or password.")
    state.login_throttle.forget(session, attempt)
    session.commit()
    request.session.clear()  # a fresh session: nothing from before the login carries over
    request.session.update(user_id=user.id, generation=user.session_generation, csrf=new_csrf_token())
    return RedirectResponse("/", status_code=303)


@router.get("/api/session")
def session_token(request: Request, user: Caller):
    """The CSRF token of the caller's current session, so an open page whose token went stale
    (a new login in another tab) can resend its queued answers; only a logged-in session gets
    one (an API token has no session), and a visitor's request starts no session. The account is
    named too: an answer waiting in the browser is sent only under its own labeler's session."""
    csrf = request.session.get("csrf")
    if request.session.get("user_id") != user.id or not csrf:
        raise HTTPException(401, "log in first")
    return JSONResponse({"csrf": csrf, "user": user.id}, headers={"Cache-Control": "no-store"})


@router.post("/logout")
def logout(request: Request, user: Caller, session: Database):
    """Ends every session of the account, including cookies saved elsewhere (server-side)."""
    user.session_generation += 1
    session.commit()
    request.session.clear()
    return RedirectResponse("/login", status_code=303)

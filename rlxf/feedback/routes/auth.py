"""Logging in and out with a password; the session cookie carries the user and a CSRF token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
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
    attempt = f"{name}|{request.client.host if request.client else ''}"
    if state.login_throttle.refuses(attempt):
        raise HTTPException(429, "too many failed logins; try again in a few minutes")
    user = session.scalar(select(User).where(User.name == name))
    if not admin.check_password(user, password):
        state.login_throttle.count_failure(attempt)
        return page(request, "login.html", error="Wrong name or password.")
    state.login_throttle.forget(attempt)
    request.session.clear()  # a fresh session: nothing from before the login carries over
    request.session.update(user_id=user.id, csrf=new_csrf_token())
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, user: Caller):
    request.session.clear()
    return RedirectResponse("/login", status_code=303)

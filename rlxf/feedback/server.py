"""`rlxf serve`: the labeling app (FastAPI, server-rendered pages, one small script).

Labelers log in with a password (a signed session cookie; every form and API write carries
the session's CSRF token) or call the JSON API with their token (``Authorization: Bearer``).
Every by-id route looks the project up among the caller's own (404 otherwise); admins see all.
The routes live in `rlxf.feedback.routes`, one module per area.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from rlxf import __version__
from rlxf.config import Checked
from rlxf.feedback.routes import admin, auth, labeling, quality
from rlxf.feedback.routes.dependencies import AppState, page_templates
from rlxf.feedback.security import BodySizeLimit, LoginThrottle, SecurityHeaders
from rlxf.feedback.store import Store
from rlxf.feedback.url_import import IMPORT_TIMEOUT_SECONDS

STATIC = Path(__file__).parent / "static"
SESSION_SECONDS = 12 * 3600


@dataclass
class ServeConfig(Checked):
    db: str = "feedback.db"
    """The store: a SQLite file, or a SQLAlchemy URL such as postgresql+psycopg://user@host/db."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to serve other machines; put TLS in front)."""
    port: int = 8000
    """Port to listen on."""
    secret_key_file: str = ""
    """File holding the key that signs session cookies (made on first start); empty: beside a
    SQLite store, or the RLXF_SECRET_KEY environment variable."""
    max_body_bytes: int = 2_000_000
    """Largest request accepted (item uploads included)."""
    import_hosts: list[str] = field(default_factory=list)
    """Hosts that item files may be imported from by URL; none by default."""
    import_timeout_seconds: float = IMPORT_TIMEOUT_SECONDS
    """Longest an import by URL may take, from connecting to the last byte."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set when served behind TLS)."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses of reverse proxies whose X-Forwarded-For names the client (login throttling
    counts by client address); none by default, so a client cannot name itself."""

    def check(self):
        if not 0 < self.port < 65536 or self.max_body_bytes < 1024:
            raise ValueError("port must be 1-65535 and max_body_bytes at least 1024")


def secret_key(config: ServeConfig) -> str:
    """The key that signs session cookies: RLXF_SECRET_KEY, else the key file (made on first use)."""
    if os.environ.get("RLXF_SECRET_KEY"):
        return os.environ["RLXF_SECRET_KEY"]
    path = Path(config.secret_key_file) if config.secret_key_file else Path(f"{config.db}.secret")
    if "://" in config.db and not config.secret_key_file:
        raise ValueError("with a database URL, set secret_key_file or RLXF_SECRET_KEY")
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(
    store: Store,
    *,
    secret: str,
    max_body_bytes: int = 2_000_000,
    import_hosts: list[str] | None = None,
    import_timeout_seconds: float = IMPORT_TIMEOUT_SECONDS,
    secure_cookies: bool = False,
) -> FastAPI:
    """The app over ``store``: its routes, the session cookie signed with ``secret``, security
    headers, and requests over ``max_body_bytes`` refused before any route runs."""
    app = FastAPI(title="rlxf feedback", version=__version__, docs_url=None, redoc_url=None)
    app.state.feedback = AppState(
        store=store,
        templates=page_templates(),
        login_throttle=LoginThrottle(),
        rng=random.SystemRandom(),
        import_hosts=import_hosts or [],
        import_timeout_seconds=import_timeout_seconds,
        max_body_bytes=max_body_bytes,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="rlxf_session",
        max_age=SESSION_SECONDS,
        same_site="strict",
        https_only=secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit, limit=max_body_bytes)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for area in (auth, labeling, admin, quality):
        app.include_router(area.router)
    return app


async def http_error(request: Request, error: HTTPException):
    """A page visitor who is not logged in is sent to the login page; everyone else gets the
    error as JSON."""
    wants_page = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
    if error.status_code == 401 and wants_page:
        return RedirectResponse("/login", status_code=303)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


async def validation_error(request: Request, error: RequestValidationError):
    """422 with what was wrong and where, without echoing the input back: it may not even be
    encodable (a lone surrogate), and it is the sender's own anyway."""
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in error.errors()
    ]
    body = json.dumps({"detail": details}, ensure_ascii=True, default=str)
    return Response(body, status_code=422, media_type="application/json")


def serve(config: ServeConfig) -> None:
    import uvicorn

    store = Store(config.db)
    store.upgrade()
    app = create_app(
        store,
        secret=secret_key(config),
        max_body_bytes=config.max_body_bytes,
        import_hosts=config.import_hosts,
        import_timeout_seconds=config.import_timeout_seconds,
        secure_cookies=config.secure_cookies,
    )
    print(f"rlxf feedback app on http://{config.host}:{config.port} (store: {config.db})")
    uvicorn.run(app, **uvicorn_settings(config))


def uvicorn_settings(config: ServeConfig) -> dict:
    """Where to listen, and whose X-Forwarded-For to believe: only ``trusted_proxies``'
    (uvicorn's own default believes any client on loopback)."""
    proxies = ",".join(config.trusted_proxies)
    return {
        "host": config.host,
        "port": config.port,
        "log_level": "warning",
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }

"""`rlxf serve`: the labeling app (FastAPI, server-rendered pages, one small script).

Labelers log in with a password (a signed session cookie; every form and API write carries
the session's CSRF token) or call the JSON API with their token (``Authorization: Bearer``).
Every by-id route looks the project up among the caller's own (404 otherwise); admins see all.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from rlxf import __version__
from rlxf.data import DataError
from rlxf.feedback import admin
from rlxf.feedback.distribution import Refused, next_assignment, record_answer
from rlxf.feedback.quality import quality_report
from rlxf.feedback.security import (
    BodySizeLimit,
    SecurityHeaders,
    UnsafeURL,
    check_import_url,
    new_csrf_token,
    render_markdown,
    same_token,
)
from rlxf.feedback.store import Answer, Assignment, Candidate, Item, Membership, Project, Store, User

HERE = Path(__file__).parent
LOGIN_ATTEMPTS, LOGIN_WINDOW_SECONDS = 5, 300
"""Failed logins allowed per account and client address in a window, before refusing (429)."""
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SESSION_SECONDS = 12 * 3600


@dataclass
class ServeConfig:
    db: str = "feedback.db"
    """The store: a SQLite file, or a SQLAlchemy URL such as postgresql+psycopg://user@host/db."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to serve other machines; put TLS in front)."""
    port: int = 8000
    secret_key_file: str = ""
    """File holding the key that signs session cookies (made on first start); empty: beside a
    SQLite store, or the RLXF_SECRET_KEY environment variable."""
    max_body_bytes: int = 2_000_000
    """Largest request accepted (item uploads included)."""
    import_hosts: list[str] = field(default_factory=list)
    """Hosts that item files may be imported from by URL; none by default."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set when served behind TLS)."""

    def __post_init__(self):
        if not 0 < self.port < 65536 or self.max_body_bytes < 1024:
            raise ValueError("port must be 1-65535 and max_body_bytes at least 1024")


def secret_key(config: ServeConfig) -> str:
    if os.environ.get("RLXF_SECRET_KEY"):
        return os.environ["RLXF_SECRET_KEY"]
    path = Path(config.secret_key_file) if config.secret_key_file else Path(f"{config.db}.secret")
    if "://" in config.db and not config.secret_key_file:
        raise ValueError("with a database URL, set secret_key_file or RLXF_SECRET_KEY")
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


class AnswerIn(BaseModel):
    item_id: int
    answer: dict
    idempotency_key: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    supersedes: int | None = None


def create_app(
    store: Store,
    *,
    secret: str,
    max_body_bytes: int = 2_000_000,
    import_hosts: list[str] | None = None,
    secure_cookies: bool = False,
) -> FastAPI:
    app = FastAPI(title="rlxf feedback", version=__version__, docs_url=None, redoc_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["markdown"] = render_markdown
    rng = random.SystemRandom()
    failed_logins: dict[str, deque] = defaultdict(deque)  # per process: one app process per store
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
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

    def database():
        """A session per request; a route that writes commits before it answers, so an
        acknowledged write is stored; anything not committed is rolled back."""
        session = store.new_session()
        try:
            yield session
        finally:
            session.close()

    async def csrf_given(request: Request) -> str | None:
        """The CSRF token a request carries: header X-CSRF-Token, or a form's csrf field."""
        given = request.headers.get("x-csrf-token")
        if given is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
            given = (await request.form()).get("csrf")
        return given if isinstance(given, str) else None

    def caller(request: Request, csrf: str | None = Depends(csrf_given), session: Session = Depends(database)) -> User:
        """The logged-in user (session cookie) or the bearer of an API token; writes by
        session must carry its CSRF token."""
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            user = admin.user_by_token(session, authorization[7:].strip())
            if user is None:
                raise HTTPException(401, "unknown token")
            return user
        user = session.get(User, request.session.get("user_id", 0))
        if user is None:
            raise HTTPException(401, "log in first")
        if request.method not in ("GET", "HEAD") and not same_token(request.session.get("csrf"), csrf):
            raise HTTPException(403, "missing or wrong CSRF token")
        return user

    def administrator(user: User = Depends(caller)) -> User:
        if user.role != "admin":
            raise HTTPException(403, "admins only")
        return user

    def project_of(session: Session, user: User, project_id: int) -> Project:
        project = session.get(Project, project_id)
        member = project is not None and (
            user.role == "admin" or session.get(Membership, (project_id, user.id)) is not None
        )
        if not member:
            raise HTTPException(404, f"no project {project_id}")
        return project

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        wants_page = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if error.status_code == 401 and wants_page:
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    # ---- pages -----------------------------------------------------------------------------

    def page(request: Request, name: str, **context) -> HTMLResponse:
        request.session.setdefault("csrf", new_csrf_token())
        return templates.TemplateResponse(
            request, name, {"csrf": request.session["csrf"], "version": __version__, **context}
        )

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return page(request, "login.html", error=None)

    @app.post("/login")
    def login(
        request: Request,
        name: str = Form(max_length=64),
        password: str = Form(max_length=256),
        csrf: str = Form(max_length=128),
        session: Session = Depends(database),
    ):
        if not same_token(request.session.get("csrf"), csrf):
            raise HTTPException(403, "missing or wrong CSRF token")
        failures = failed_logins[f"{name}|{request.client.host if request.client else ''}"]
        while failures and failures[0] < time.monotonic() - LOGIN_WINDOW_SECONDS:
            failures.popleft()
        if len(failures) >= LOGIN_ATTEMPTS:
            raise HTTPException(429, "too many failed logins; try again in a few minutes")
        user = session.scalar(select(User).where(User.name == name))
        if not admin.check_password(user, password):
            failures.append(time.monotonic())
            return page(request, "login.html", error="Wrong name or password.")
        failures.clear()
        request.session.clear()  # a fresh session: nothing from before the login carries over
        request.session.update(user_id=user.id, csrf=new_csrf_token())
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, user: User = Depends(caller)):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, user: User = Depends(caller), session: Session = Depends(database)):
        return page(request, "projects.html", user=user, projects=progress(session, user))

    @app.get("/projects/{project_id}", response_class=HTMLResponse)
    def label_page(
        request: Request, project_id: int, user: User = Depends(caller), session: Session = Depends(database)
    ):
        project = project_of(session, user, project_id)
        assignment = next_assignment(session, project.id, user, rng)
        task = None if assignment is None else shown_task(session, assignment)
        done = answered_count(session, project.id, user)
        session.commit()
        return page(request, "label.html", user=user, project=project, task=task, answered=done)

    # ---- JSON API --------------------------------------------------------------------------

    @app.get("/api/projects/{project_id}/next")
    def next_item(project_id: int, user: User = Depends(caller), session: Session = Depends(database)):
        project = project_of(session, user, project_id)
        assignment = next_assignment(session, project.id, user, rng)
        if assignment is None:
            return Response(status_code=204)
        task = shown_task(session, assignment)
        session.commit()
        return {
            "item_id": task["item"].id,
            "question": project.question,
            "prompt": task["item"].prompt,
            "responses": [c.text for c in task["candidates"]],
            "aspects": project.aspects,
            "span_tags": project.span_tags,
            "expires_at": assignment.expires_at.isoformat() + "Z",
        }

    @app.post("/api/projects/{project_id}/answers")
    def submit(project_id: int, body: AnswerIn, user: User = Depends(caller), session: Session = Depends(database)):
        project = project_of(session, user, project_id)
        try:
            answer, created = record_answer(
                session,
                project.id,
                user,
                body.item_id,
                body.answer,
                idempotency_key=body.idempotency_key,
                app_version=__version__,
                supersedes=body.supersedes,
            )
        except Refused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        session.commit()
        return JSONResponse({"answer_id": answer.id, "duplicate": not created}, status_code=201 if created else 200)

    # ---- admin -----------------------------------------------------------------------------

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request, user: User = Depends(administrator), session: Session = Depends(database)):
        return page(request, "admin.html", user=user, **admin_context(session))

    @app.get("/admin/projects/{project_id}/quality", response_class=HTMLResponse)
    def quality_page(
        request: Request, project_id: int, user: User = Depends(administrator), session: Session = Depends(database)
    ):
        project = project_of(session, user, project_id)
        return page(request, "quality.html", user=user, project=project, report=quality_report(session, project))

    @app.get("/admin/projects/{project_id}/quality.png")
    def quality_plot(project_id: int, user: User = Depends(administrator), session: Session = Depends(database)):
        project = project_of(session, user, project_id)
        return Response(labeler_plot(quality_report(session, project)), media_type="image/png")

    @app.post("/admin/users", response_class=HTMLResponse)
    def add_user(
        request: Request,
        name: str = Form(max_length=64),
        role: str = Form("labeler"),
        password: str = Form("", max_length=256),
        user: User = Depends(administrator),
        session: Session = Depends(database),
    ):
        try:
            created, token = admin.create_user(session, name, role, password or None)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        session.commit()
        message = f"Created {created.name}. API token (shown once): {token}"
        return page(request, "admin.html", user=user, **admin_context(session, message))

    @app.post("/admin/projects", response_class=HTMLResponse)
    def add_project(
        request: Request,
        name: str = Form(max_length=128),
        question: str = Form(),
        overlap: int = Form(1),
        aspects: str = Form("", max_length=1000),
        span_tags: str = Form("", max_length=1000),
        guidelines: str = Form("", max_length=20000),
        user: User = Depends(administrator),
        session: Session = Depends(database),
    ):
        try:
            admin.create_project(
                session,
                name,
                question,
                overlap=overlap,
                aspects=split(aspects),
                span_tags=split(span_tags),
                guidelines=guidelines,
            )
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        session.commit()
        return page(request, "admin.html", user=user, **admin_context(session, f"Created project {name}."))

    @app.post("/admin/projects/{project_id}/members", response_class=HTMLResponse)
    def add_member(
        request: Request,
        project_id: int,
        name: str = Form(max_length=64),
        user: User = Depends(administrator),
        session: Session = Depends(database),
    ):
        project = project_of(session, user, project_id)
        member = session.scalar(select(User).where(User.name == name))
        if member is None:
            raise HTTPException(404, f"no user {name!r}")
        admin.add_member(session, project, member)
        session.commit()
        return page(request, "admin.html", user=user, **admin_context(session, f"{name} labels {project.name}."))

    @app.post("/admin/projects/{project_id}/items", response_class=HTMLResponse)
    def upload_items(
        request: Request,
        project_id: int,
        file: UploadFile = File(),
        user: User = Depends(administrator),
        session: Session = Depends(database),
    ):
        project = project_of(session, user, project_id)
        return import_file(request, session, user, project, file.filename or "upload.jsonl", file.file.read())

    @app.post("/admin/projects/{project_id}/import-url", response_class=HTMLResponse)
    def import_url(
        request: Request,
        project_id: int,
        url: str = Form(max_length=2000),
        user: User = Depends(administrator),
        session: Session = Depends(database),
    ):
        import httpx

        project = project_of(session, user, project_id)
        try:
            check_import_url(url, import_hosts or [])
        except UnsafeURL as error:
            raise HTTPException(400, f"import refused: {error}") from None
        with httpx.stream("GET", url, follow_redirects=False, timeout=30) as response:
            response.raise_for_status()
            content = b""
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > max_body_bytes:
                    raise HTTPException(413, "the file at that URL is too large")
        return import_file(request, session, user, project, Path(url).name or "import.jsonl", content)

    def import_file(request, session, user, project, filename: str, content: bytes):
        suffix = Path(filename).suffix.lower()
        if suffix not in (".jsonl", ".json", ".csv"):
            raise HTTPException(422, "items must be a .jsonl, .json or .csv file")
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(filename).name
            path.write_bytes(content)
            try:
                count = admin.import_items(session, project, path)
            except (DataError, ValueError) as error:
                raise HTTPException(422, str(error).replace(str(folder) + "/", "")) from None
        session.commit()
        message = f"Imported {count} items into {project.name}."
        return page(request, "admin.html", user=user, **admin_context(session, message))

    return app


def labeler_plot(report: dict) -> bytes:
    """Bars per labeler: gold accuracy, self-consistency and mean kappa with the others."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(report["labelers"])
    measures = ("gold_accuracy", "consistency", "mean_kappa")
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.2))
    width = 0.8 / len(measures)
    for index, measure in enumerate(measures):
        values = [report["labelers"][n][measure] for n in names]
        axes.bar(
            [i + index * width for i in range(len(names))],
            [v if v is not None else 0 for v in values],
            width,
            label=measure.replace("_", " "),
        )
    axes.set_xticks([i + width for i in range(len(names))], names)
    axes.set_ylim(-0.2, 1.05)
    axes.axhline(0, color="#888", linewidth=0.8)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def shown_task(session: Session, assignment: Assignment) -> dict:
    item = session.get(Item, assignment.item_id)
    by_id = {c.id: c for c in session.scalars(select(Candidate).where(Candidate.item_id == item.id))}
    return {"item": item, "candidates": [by_id[i] for i in assignment.shown_order], "assignment": assignment}


def answered_count(session: Session, project_id: int, user: User) -> int:
    return session.scalar(
        select(func.count(func.distinct(Answer.item_id))).where(
            Answer.project_id == project_id, Answer.user_id == user.id
        )
    )


def progress(session: Session, user: User) -> list[dict]:
    """The caller's projects, each with how many items they answered and how many it has."""
    query = select(Project).order_by(Project.id)
    if user.role != "admin":
        query = query.join(Membership, Membership.project_id == Project.id).where(Membership.user_id == user.id)
    rows = []
    for project in session.scalars(query):
        total = session.scalar(select(func.count(Item.id)).where(Item.project_id == project.id))
        rows.append({"project": project, "answered": answered_count(session, project.id, user), "total": total})
    return rows


def admin_context(session: Session, message: str | None = None) -> dict:
    return {
        "projects": session.scalars(select(Project).order_by(Project.id)).all(),
        "users": session.scalars(select(User).order_by(User.id)).all(),
        "message": message,
    }


def serve(config: ServeConfig) -> None:
    import uvicorn

    store = Store(config.db)
    store.upgrade()
    app = create_app(
        store,
        secret=secret_key(config),
        max_body_bytes=config.max_body_bytes,
        import_hosts=config.import_hosts,
        secure_cookies=config.secure_cookies,
    )
    print(f"rlxf feedback app on http://{config.host}:{config.port} (store: {config.db})")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")

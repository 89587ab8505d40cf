"""The admin page and its forms: users, projects, members, and items uploaded or imported by URL
(only from the allow-listed public hosts). Every route here needs the admin role."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlxf.data import DataError
from rlxf.feedback import admin
from rlxf.feedback.routes.dependencies import Administrator, Database, ProjectId, Shared, page, project_of
from rlxf.feedback.store import Project, User
from rlxf.feedback.url_import import ImportFailed, ImportTooLarge, UnsafeURL, check_import_url, fetch

ITEM_FILE_SUFFIXES = (".jsonl", ".json", ".csv")

router = APIRouter()


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, user: Administrator, session: Database):
    return page(request, "admin.html", user=user, **admin_context(session))


@router.post("/admin/users", response_class=HTMLResponse)
def add_user(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    user: Administrator,
    session: Database,
    role: Annotated[str, Form()] = "labeler",
    password: Annotated[str, Form(max_length=256)] = "",
):
    """Creates the account and shows its API token, once."""
    try:
        created, token = admin.create_user(session, name, role, password or None)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    session.commit()
    message = f"Created {created.name}. API token (shown once): {token}"
    return page(request, "admin.html", user=user, **admin_context(session, message))


@router.post("/admin/projects", response_class=HTMLResponse)
def add_project(
    request: Request,
    name: Annotated[str, Form(max_length=128)],
    question: Annotated[str, Form()],
    user: Administrator,
    session: Database,
    overlap: Annotated[int, Form()] = 1,
    aspects: Annotated[str, Form(max_length=1000)] = "",
    span_tags: Annotated[str, Form(max_length=1000)] = "",
    guidelines: Annotated[str, Form(max_length=20000)] = "",
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


@router.post("/admin/projects/{project_id}/members", response_class=HTMLResponse)
def add_member(
    request: Request,
    project_id: ProjectId,
    name: Annotated[str, Form(max_length=64)],
    user: Administrator,
    session: Database,
):
    project = project_of(session, user, project_id)
    member = session.scalar(select(User).where(User.name == name))
    if member is None:
        raise HTTPException(404, f"no user {name!r}")
    admin.add_member(session, project, member)
    session.commit()
    return page(request, "admin.html", user=user, **admin_context(session, f"{name} labels {project.name}."))


@router.post("/admin/projects/{project_id}/items", response_class=HTMLResponse)
def upload_items(
    request: Request,
    project_id: ProjectId,
    file: Annotated[UploadFile, File()],
    user: Administrator,
    session: Database,
):
    project = project_of(session, user, project_id)
    return import_file(request, session, user, project, file.filename or "upload.jsonl", file.file.read())


@router.post("/admin/projects/{project_id}/import-url", response_class=HTMLResponse)
def import_url(
    request: Request,
    project_id: ProjectId,
    url: Annotated[str, Form(max_length=2000)],
    user: Administrator,
    session: Database,
    state: Shared,
):
    """Imports the item file at ``url`` (see `rlxf.feedback.url_import` for what is refused). The
    transaction ends before the download, so a slow host holds no database lock."""
    project_of(session, user, project_id)
    session.rollback()  # no transaction (SQLite: no write lock) while the name resolves and the file downloads
    try:
        checked = check_import_url(url, state.import_hosts)
    except UnsafeURL as error:
        raise HTTPException(400, f"import refused: {error}") from None
    filename = Path(urlsplit(url).path).name or "import.jsonl"
    if Path(filename).suffix.lower() not in ITEM_FILE_SUFFIXES:  # before the download, not after
        raise HTTPException(422, "items must be a .jsonl, .json or .csv file")
    try:
        content = fetch(checked, state.max_body_bytes, state.import_timeout_seconds)
    except ImportTooLarge as error:
        raise HTTPException(413, str(error)) from None
    except ImportFailed as error:
        raise HTTPException(400, f"import failed: {error}") from None
    project = project_of(session, user, project_id)
    return import_file(request, session, user, project, filename, content)


def import_file(request: Request, session: Session, user: User, project: Project, filename: str, content: bytes):
    """Imports ``content`` as the item file ``filename`` and shows the admin page; errors name
    the file and line as the admin knows them, not the temporary folder they were read from."""
    suffix = Path(filename).suffix.lower()
    if suffix not in ITEM_FILE_SUFFIXES:
        raise HTTPException(422, "items must be a .jsonl, .json or .csv file")
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


def split(text: str) -> list[str]:
    """The non-empty entries of a comma-separated form field."""
    return [part.strip() for part in text.split(",") if part.strip()]


def admin_context(session: Session, message: str | None = None) -> dict:
    return {
        "projects": session.scalars(select(Project).order_by(Project.id)).all(),
        "users": session.scalars(select(User).order_by(User.id)).all(),
        "message": message,
    }

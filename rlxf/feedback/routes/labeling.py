"""What a labeler sees and sends: the list of their projects, the labeling page, and the JSON
API for the next item and for answers (the page's script uses it; so can a client with a token)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlxf import __version__
from rlxf.data.readers import find_lone_surrogate
from rlxf.feedback.distribution import Refused, next_assignment, record_answer
from rlxf.feedback.routes.dependencies import MAX_ID, Caller, Database, ProjectId, Shared, page, project_of
from rlxf.feedback.store import Answer, Assignment, Candidate, Item, Membership, Project, User

router = APIRouter()


class AnswerIn(BaseModel):
    item_id: int = Field(ge=1, le=MAX_ID)
    answer: dict
    idempotency_key: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    """The client's key for this answer: a retried request with the same key stores nothing new."""
    supersedes: int | None = Field(default=None, ge=1, le=MAX_ID)
    """The id of the caller's earlier answer that this one corrects (the newest of its chain)."""

    @field_validator("answer")
    @classmethod
    def _text_only(cls, answer: dict) -> dict:
        """A lone surrogate (``"\\ud800"`` in JSON) is no text: it could be stored but not exported or shown."""
        if find_lone_surrogate(answer) is not None:
            raise ValueError("the answer holds a lone surrogate (\\ud800-\\udfff), which is not text")
        return answer


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: Caller, session: Database):
    return page(request, "projects.html", user=user, projects=progress(session, user))


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def label_page(request: Request, project_id: ProjectId, user: Caller, session: Database, state: Shared):
    project = project_of(session, user, project_id)
    assignment = next_assignment(session, project.id, user, state.rng)
    task = None if assignment is None else shown_task(session, assignment)
    done = answered_count(session, project.id, user)
    session.commit()
    return page(request, "label.html", user=user, project=project, task=task, answered=done)


@router.get("/api/projects/{project_id}/next")
def next_item(project_id: ProjectId, user: Caller, session: Database, state: Shared):
    """The caller's next item with its responses in the order to show them; 204 when none is left."""
    project = project_of(session, user, project_id)
    assignment = next_assignment(session, project.id, user, state.rng)
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


@router.post("/api/projects/{project_id}/answers")
def submit(project_id: ProjectId, body: AnswerIn, user: Caller, session: Database):
    """Stores the answer (201), or finds the one stored under the same idempotency key (200)."""
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


def shown_task(session: Session, assignment: Assignment) -> dict:
    """The assigned item with its responses in the order this labeler is shown them."""
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

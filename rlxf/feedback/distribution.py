"""Who answers what: leases on items, overlap per project, never the same item twice.

Each labeler holds at most one open lease per project (a reload shows the same item). A new
lease goes to an item this labeler has never been given whose answered-or-leased count is
below the project's overlap; a lease that expires unanswered frees its place for someone else
(never for the same labeler again). Gold items (known answers) and repeats of items the
labeler answered before are mixed in at the project's rates, to measure accuracy and
self-consistency; in active ordering the most uncertain items go first. Grants and answers lock the project row (SQLite takes its
write lock at BEGIN), so concurrent requests cannot push an item past its overlap.
"""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from rlxf.feedback.questions import AnswerError, checked_answer
from rlxf.feedback.store import Answer, Assignment, Candidate, Item, Project, User, now


class Refused(Exception):
    """A request the store refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def locked_project(session: Session, project_id: int) -> Project:
    project = session.scalar(select(Project).where(Project.id == project_id).with_for_update())
    if project is None:
        raise Refused(404, f"no project {project_id}")
    return project


def _holding(at: dt.datetime):
    """Assignments that occupy a place in an item's overlap: answered, or leased and not expired."""
    return or_(Assignment.answered, Assignment.expires_at > at)


def next_assignment(session: Session, project_id: int, user: User, rng: random.Random) -> Assignment | None:
    """This labeler's open lease in the project, else a new one: now and then a gold item or a
    repeat (the project's gold_rate and repeat_rate), else a free task item; None when no task
    is left for them."""
    project, at = locked_project(session, project_id), now()
    open_lease = session.scalar(
        select(Assignment)
        .join(Item, Item.id == Assignment.item_id)
        .where(Item.project_id == project.id, Assignment.user_id == user.id)
        .where(~Assignment.answered, Assignment.expires_at > at)
    )
    if open_lease is not None:
        return open_lease
    roll = rng.random()
    item = None
    if roll < project.gold_rate:
        item = _unseen_gold(session, project, user, rng)
    elif roll < project.gold_rate + project.repeat_rate:
        item = _repeat(session, project, user, rng)
    item = item or _free_task(session, project, user, rng, at)
    if item is None:
        return None
    assignment = Assignment(
        item_id=item.id,
        user_id=user.id,
        shown_order=shown_order(session, item, rng),
        leased_at=at,
        expires_at=at + dt.timedelta(seconds=project.lease_seconds),
    )
    session.add(assignment)
    session.flush()
    return assignment


def _seen_by(user: User):
    return exists().where(Assignment.item_id == Item.id, Assignment.user_id == user.id)


def _free_task(session: Session, project: Project, user: User, rng: random.Random, at: dt.datetime) -> Item | None:
    """A task item below its overlap that this labeler never had: at random, or in active
    ordering the one with the highest priority (then the oldest)."""
    holders = select(func.count(Assignment.id)).where(Assignment.item_id == Item.id, _holding(at)).scalar_subquery()
    free = select(Item.id).where(
        Item.project_id == project.id, Item.kind == "task", ~_seen_by(user), holders < project.overlap
    )
    if project.ordering == "active":
        first = session.scalar(free.order_by(Item.priority.desc().nulls_last(), Item.id).limit(1))
        return None if first is None else session.get(Item, first)
    ids = session.scalars(free.order_by(Item.id)).all()
    return session.get(Item, rng.choice(ids)) if ids else None


def _unseen_gold(session: Session, project: Project, user: User, rng: random.Random) -> Item | None:
    """A gold item this labeler has not had (gold items go to everyone, overlap aside)."""
    ids = session.scalars(
        select(Item.id).where(Item.project_id == project.id, Item.kind == "gold", ~_seen_by(user)).order_by(Item.id)
    ).all()
    return session.get(Item, rng.choice(ids)) if ids else None


def _repeat(session: Session, project: Project, user: User, rng: random.Random) -> Item | None:
    """A fresh copy of a task item this labeler answered and has not been shown again; the copy
    (kind repeat) gets its own display order, so a consistent labeler recognizes content, not
    position."""
    repeated = (
        select(Item.repeat_of)
        .join(Assignment, Assignment.item_id == Item.id)
        .where(Item.kind == "repeat", Assignment.user_id == user.id)
    )
    ids = session.scalars(
        select(Item.id)
        .join(Assignment, Assignment.item_id == Item.id)
        .where(Item.project_id == project.id, Item.kind == "task", Assignment.user_id == user.id)
        .where(Assignment.answered, Item.id.not_in(repeated))
        .order_by(Item.id)
    ).all()
    if not ids:
        return None
    original = session.get(Item, rng.choice(ids))
    copy = Item(
        project_id=project.id, prompt=original.prompt, source=original.source, kind="repeat", repeat_of=original.id
    )
    session.add(copy)
    session.flush()
    for candidate in original.candidates:
        session.add(Candidate(item_id=copy.id, position=candidate.position, text=candidate.text, model=candidate.model))
    session.flush()
    session.refresh(copy)
    return copy


def shown_order(session: Session, item: Item, rng: random.Random) -> list[int]:
    """Candidate ids in display order: shuffled; for two candidates, alternated across the
    item's labelers (left/right balanced) from a first order drawn at random per item."""
    ids = [c.id for c in item.candidates]
    if len(ids) != 2:
        rng.shuffle(ids)
        return ids
    given = session.scalar(select(func.count(Assignment.id)).where(Assignment.item_id == item.id))
    first_flipped = random.Random(item.id).random() < 0.5
    return ids[::-1] if (given % 2 == 1) != first_flipped else ids


def record_answer(
    session: Session,
    project_id: int,
    user: User,
    item_id: int,
    payload: object,
    *,
    idempotency_key: str,
    app_version: str,
    supersedes: int | None = None,
) -> tuple[Answer, bool]:
    """Store one answer; returns it and whether it is new. A key already stored returns the
    stored answer (a retried request). A correction names the answer it ``supersedes``."""
    project = locked_project(session, project_id)  # after the lock: a concurrent retry sees ours
    stored = session.scalar(select(Answer).where(Answer.idempotency_key == idempotency_key))
    if stored is not None:
        if stored.user_id != user.id or stored.item_id != item_id:
            raise Refused(409, "this idempotency key belongs to another answer")
        return stored, False
    assignment = session.scalar(select(Assignment).where(Assignment.item_id == item_id, Assignment.user_id == user.id))
    item = session.get(Item, item_id)
    if assignment is None or item is None or item.project_id != project.id:
        raise Refused(403, f"item {item_id} was not given to you in this project")
    if supersedes is not None:
        earlier = session.get(Answer, supersedes)
        if earlier is None or earlier.user_id != user.id or earlier.item_id != item_id:
            raise Refused(409, f"answer {supersedes} is not one of yours for item {item_id}")
        # under the project lock: of two corrections of one answer, the second sees the first
        later = session.scalar(select(Answer.id).where(Answer.supersedes == supersedes))
        if later is not None:
            raise Refused(409, f"answer {supersedes} was corrected already by answer {later}; correct that one")
    elif assignment.answered:
        raise Refused(409, f"item {item_id} is answered already; send a correction (supersedes) to change it")
    elif assignment.expires_at <= now() and _overlap_taken(session, project, assignment):
        raise Refused(409, f"your lease on item {item_id} expired and the item went to someone else")
    texts = _shown_texts(session, assignment)
    try:
        answer_fields = checked_answer(project.question, payload, texts, project)
    except AnswerError as error:
        raise Refused(422, str(error)) from None
    answer = Answer(
        project_id=project.id,
        item_id=item_id,
        user_id=user.id,
        question=project.question,
        payload=answer_fields,
        shown_order=assignment.shown_order,
        idempotency_key=idempotency_key,
        supersedes=supersedes,
        app_version=app_version,
    )
    assignment.answered = True
    session.add(answer)
    session.flush()
    return answer, True


def _overlap_taken(session: Session, project: Project, assignment: Assignment) -> bool:
    others = session.scalar(
        select(func.count(Assignment.id)).where(
            Assignment.item_id == assignment.item_id, Assignment.id != assignment.id, _holding(now())
        )
    )
    return others >= project.overlap


def _shown_texts(session: Session, assignment: Assignment) -> list[str]:
    texts = dict(
        session.execute(select(Candidate.id, Candidate.text).where(Candidate.id.in_(assignment.shown_order))).all()
    )
    return [texts[i] for i in assignment.shown_order]

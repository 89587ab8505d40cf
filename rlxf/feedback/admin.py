"""Setting up labeling: accounts, projects, members and items (the CLI and the admin pages)."""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlxf.data.formats import read_response_sets
from rlxf.feedback.questions import QUESTIONS_HELP, REACTIONS, candidates_needed
from rlxf.feedback.store import ORDERINGS, QUESTIONS, ROLES, Candidate, Item, Membership, Project, User

_hasher = PasswordHasher()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_PROJECT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_project_name(name: str) -> None:
    """ASCII letters, digits, '-', '_' and '.', not starting with '.': a project's name becomes
    its export folder's, so it can never be absolute or climb out (``..``)."""
    if not isinstance(name, str) or len(name) > 128 or not _PROJECT_NAME.fullmatch(name):
        raise ValueError(f"project name must be 1-128 ASCII letters, digits, '-', '_' or '.' (not first), got {name!r}")


def create_user(session: Session, name: str, role: str = "labeler", password: str | None = None) -> tuple[User, str]:
    """A new account and its API token (shown once; only its hash is stored). ``password``
    (argon2-hashed) lets the account log in on the web page too."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"user name must be 1-64 letters, digits, '-', '_' or '.', got {name!r}")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists already")
    if password is not None and len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    token = secrets.token_urlsafe(32)
    user = User(
        name=name,
        role=role,
        password_hash=_hasher.hash(password) if password is not None else None,
        token_hash=hash_token(token),
    )
    session.add(user)
    session.flush()
    return user, token


def set_password(user: User, password: str) -> None:
    """A new password; every web session of the account ends."""
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    user.password_hash = _hasher.hash(password)
    user.session_generation += 1


def check_password(user: User | None, password: str) -> bool:
    if user is None or user.password_hash is None:
        _hasher.hash(password)  # the same work whether or not the account exists
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def user_by_token(session: Session, token: str) -> User | None:
    return session.scalar(select(User).where(User.token_hash == hash_token(token))) if token else None


def create_project(
    session: Session,
    name: str,
    question: str,
    *,
    overlap: int = 1,
    aspects: list[str] | None = None,
    span_tags: list[str] | None = None,
    guidelines: str = "",
    lease_seconds: int = 600,
    ordering: str = "random",
    gold_rate: float = 0.0,
    repeat_rate: float = 0.0,
) -> Project:
    check_project_name(name)
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {', '.join(QUESTIONS)} ({QUESTIONS_HELP}), got {question!r}")
    if overlap < 1 or lease_seconds < 1:
        raise ValueError("overlap and lease_seconds must be at least 1")
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
    if not (0 <= gold_rate <= 1 and 0 <= repeat_rate <= 1 and gold_rate + repeat_rate < 1):
        raise ValueError("gold_rate and repeat_rate must be in [0, 1] and sum to less than 1")
    if question == "rating" and not aspects:
        raise ValueError("a rating project needs aspects, e.g. helpfulness,harmlessness")
    if question == "spans" and not span_tags:
        raise ValueError("a spans project needs span_tags, e.g. factual-error,irrelevant")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise ValueError(f"project {name!r} exists already")
    project = Project(
        name=name,
        question=question,
        overlap=overlap,
        aspects=list(aspects or []),
        span_tags=list(span_tags or []),
        guidelines=guidelines,
        lease_seconds=lease_seconds,
        ordering=ordering,
        gold_rate=gold_rate,
        repeat_rate=repeat_rate,
    )
    session.add(project)
    session.flush()
    return project


def add_member(session: Session, project: Project, user: User) -> None:
    if session.get(Membership, (project.id, user.id)) is None:
        session.add(Membership(project_id=project.id, user_id=user.id))


def import_items(session: Session, project: Project, path: str | Path) -> int:
    """Add a file of prompts with responses (see :func:`rlxf.data.formats.read_response_sets`)
    as items; a row with the wrong number of responses for the question is an error naming it."""
    sets, _ = read_response_sets(path)
    low, high = candidates_needed(project.question)
    for response_set in sets:
        if not low <= len(response_set.responses) <= high:
            raise ValueError(
                f"{response_set.source}: a {project.question} question takes {low}-{high} responses, "
                f"this row has {len(response_set.responses)}"
            )
    for response_set in sets:
        if response_set.gold is not None:
            check_gold(project.question, response_set.gold, len(response_set.responses), response_set.source)
    for response_set in sets:
        item = Item(
            project_id=project.id,
            prompt=response_set.prompt,
            source=response_set.source,
            kind="task" if response_set.gold is None else "gold",
            gold=response_set.gold,
        )
        session.add(item)
        session.flush()
        for position, (text, model) in enumerate(zip(response_set.responses, response_set.models)):
            session.add(Candidate(item_id=item.id, position=position, text=text, model=model))
    return len(sets)


def check_gold(question: str, gold: dict, responses: int, source: str) -> None:
    """A gold answer names responses by their position in the file (not as shown)."""
    if question == "pairwise" and gold.get("better") in (0, 1, "tie"):
        return
    if question == "reaction" and gold.get("reaction") in REACTIONS:
        return
    expected = {"pairwise": '{"better": 0, 1 or "tie"}', "reaction": '{"reaction": "love", "like" or "dislike"}'}
    if question not in expected:
        raise ValueError(f"{source}: gold items are for pairwise and reaction questions, not {question}")
    raise ValueError(f"{source}: field 'gold': expected {expected[question]}, got {gold!r}")

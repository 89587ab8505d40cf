"""The feedback store: SQLAlchemy tables, SQLite (WAL) by default, PostgreSQL by URL.

Answers are append-only: a correction is a new answer that names the one it supersedes, and
every answer keeps who gave it, when, what was shown in which order and the app version. An
idempotency key per submission makes a retried request store its answer once. The schema is
created and upgraded by alembic (``rlxf/feedback/migrations``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

QUESTIONS = ("pairwise", "ranking", "reaction", "rating", "spans", "verbal")
ROLES = ("admin", "labeler", "judge")
"""A judge account is an AI judge's: its answers sit beside the people's, it never logs in."""
ORDERINGS = ("random", "active")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # stored naive, always UTC


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    """sha256 of an API token (tokens are long random strings: a fast hash is enough)."""
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Web sessions carry the generation they were made in; logout and a new password bump it,
    which ends every earlier session of the account, wherever its cookie was saved."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    question: Mapped[str] = mapped_column(String(16))
    guidelines: Mapped[str] = mapped_column(Text, default="")
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    """How many labelers answer each item."""
    aspects: Mapped[list] = mapped_column(default=list)
    """Rating questions: the named aspects, e.g. ["helpfulness", "harmlessness"]."""
    span_tags: Mapped[list] = mapped_column(default=list)
    """Span questions: the error categories a selected span can be tagged with."""
    lease_seconds: Mapped[int] = mapped_column(Integer, default=600)
    """How long an item handed out waits for its answer before it returns to the pool."""
    ordering: Mapped[str] = mapped_column(String(8), default="random", server_default="random")
    """random, or active: items with the highest priority (reward-model uncertainty) first."""
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Share of tasks that are gold items (known answers), while the labeler has unseen ones."""
    repeat_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Share of tasks that repeat an item the labeler answered before (self-consistency)."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    items: Mapped[list[Item]] = relationship(back_populates="project")


class Membership(Base):
    __tablename__ = "memberships"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Item(Base):
    """One question: a prompt and its candidate responses."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    prompt: Mapped[list] = mapped_column()
    """Chat messages ending with the user turn the candidates answer."""
    source: Mapped[str] = mapped_column(String(512), default="")
    """Where the item came from (file and line), for errors and provenance."""
    kind: Mapped[str] = mapped_column(String(8), default="task")
    """task, gold (a known answer, to measure accuracy) or repeat (a copy, for self-consistency)."""
    gold: Mapped[dict | None] = mapped_column(JSON)
    repeat_of: Mapped[int | None] = mapped_column(ForeignKey("items.id"))
    priority: Mapped[float | None] = mapped_column(Float)
    """Active ordering: how much an answer is worth (reward-model uncertainty); higher first."""
    model_preference: Mapped[float | None] = mapped_column(Float)
    """P(response 0 is better) under the reward model(s) that set the priority."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    project: Mapped[Project] = relationship(back_populates="items")
    candidates: Mapped[list[Candidate]] = relationship(order_by="Candidate.position")


class Candidate(Base):
    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(512), default="")
    """The model or checkpoint that wrote it (empty when imported without one)."""


class Assignment(Base):
    """An item handed to a labeler: leased until ``expires_at``, ``answered`` once it is."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "user_id", name="one_assignment_per_labeler"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    shown_order: Mapped[list] = mapped_column()
    """Candidate ids in the order this labeler sees them (randomized, balanced for pairs)."""
    leased_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)


class Answer(Base):
    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("supersedes", name="one_correction_per_answer"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    question: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict] = mapped_column()
    shown_order: Mapped[list] = mapped_column()
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    supersedes: Mapped[int | None] = mapped_column(ForeignKey("answers.id"))
    app_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class LoginAttempt(Base):
    """A login try, kept for the throttle's window: counted in the store, so every worker of
    an app (and every app on one store) sees the same count."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(320), index=True)
    """The account name and the client's address."""
    at: Mapped[dt.datetime] = mapped_column(DateTime)


def database_url(value: str | Path) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file there."""
    text = str(value)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def open_engine(url: str | Path) -> Engine:
    """An engine for ``url``. SQLite runs in WAL mode (readers never wait for the writer) and
    every transaction takes the write lock up front (BEGIN IMMEDIATE), so two requests cannot
    both read an item as free and both hand it out."""
    url = database_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(connection, _record):
        connection.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """The database behind one app: ``store.session()`` is a transaction, committed on success."""

    def __init__(self, url: str | Path):
        self.engine = open_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def new_session(self) -> Session:
        """A session the caller commits (or closes, rolling back)."""
        return self._sessions()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from rlxf.feedback.migrate import upgrade

        upgrade(self.engine)

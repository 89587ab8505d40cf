"""`rlxf feedback <action> key=value ...`: set up labeling and export its answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ACTIONS = ("add-user", "create-project", "import", "add-member", "export")


@dataclass
class FeedbackConfig:
    action: str = "export"
    """add-user, create-project, import (items from a file), add-member or export."""
    db: str = "feedback.db"
    """The store: a SQLite file, or a SQLAlchemy URL."""
    name: str = ""
    """add-user: the account; create-project: the project; add-member: the account to add."""
    role: str = "labeler"
    """add-user: labeler or admin."""
    password: str = ""
    """add-user: a password for the web page (else the account uses its API token only)."""
    project: str = ""
    """import, add-member: the project's name."""
    question: str = "pairwise"
    """create-project: pairwise, ranking, reaction, rating, spans or verbal."""
    overlap: int = 1
    """create-project: answers wanted per item."""
    aspects: list[str] = field(default_factory=list)
    """create-project (rating): the aspects to rate."""
    span_tags: list[str] = field(default_factory=list)
    """create-project (spans): the error categories."""
    guidelines: str = ""
    """create-project: guidelines shown to labelers (markdown), or a path to a .md file."""
    file: str = ""
    """import: a file of {"prompt", "responses"} rows (or preference pairs)."""
    out: str = "feedback-snapshots"
    """export: where snapshot folders go."""
    projects: list[str] = field(default_factory=list)
    """export: project names (all when empty)."""

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")


def run_feedback(config: FeedbackConfig) -> None:
    from sqlalchemy import select

    from rlxf.feedback import admin
    from rlxf.feedback.export import export_snapshot
    from rlxf.feedback.store import Project, Store, User

    store = Store(config.db)
    store.upgrade()
    if config.action == "export":
        for folder in export_snapshot(store, config.out, config.projects or None):
            print(f"wrote {folder}")
        return
    with store.session() as session:

        def named(model, name: str, what: str):
            found = session.scalar(select(model).where(model.name == name))
            if found is None:
                raise ValueError(f"no {what} named {name!r}")
            return found

        if config.action == "add-user":
            user, token = admin.create_user(session, config.name, config.role, config.password or None)
            print(f"created {user.role} {user.name}; API token (shown once): {token}")
        elif config.action == "create-project":
            guidelines = config.guidelines
            if guidelines.endswith(".md") and Path(guidelines).is_file():
                guidelines = Path(guidelines).read_text(encoding="utf-8")
            project = admin.create_project(
                session,
                config.name,
                config.question,
                overlap=config.overlap,
                aspects=config.aspects,
                span_tags=config.span_tags,
                guidelines=guidelines,
            )
            print(f"created project {project.name} (id {project.id}, {project.question})")
        elif config.action == "import":
            count = admin.import_items(session, named(Project, config.project, "project"), config.file)
            print(f"imported {count} items into {config.project}")
        else:
            admin.add_member(session, named(Project, config.project, "project"), named(User, config.name, "user"))
            print(f"{config.name} labels {config.project}")

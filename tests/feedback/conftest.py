import json
import os

import pytest
from sqlalchemy import text

from rlxf.feedback.admin import add_member, create_project, create_user, import_items
from rlxf.feedback.store import Base, Store


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "feedback.db")
    store.upgrade()
    return store


def write_items(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def pair_rows(count: int) -> list[dict]:
    return [{"prompt": f"question {i}", "responses": [f"answer {i} a", f"answer {i} b"]} for i in range(count)]


def make_project(store, tmp_path, *, question="pairwise", rows=None, labelers=3, **settings):
    """A project with its items and ``labelers`` members; returns (project id, users by name)."""
    with store.session() as session:
        project = create_project(session, f"{question}-project", question, **settings)
        import_items(session, project, write_items(tmp_path / "items.jsonl", rows or pair_rows(3)))
        users = {}
        for index in range(labelers):
            user, _ = create_user(session, f"labeler{index}", password="correct horse")
            add_member(session, project, user)
            users[user.name] = user
        return project.id, users


def postgres_url() -> str:
    url = os.environ.get("RLXF_TEST_POSTGRES_URL", "")
    if not url and os.environ.get("RLXF_REQUIRE_POSTGRES"):
        raise RuntimeError("RLXF_REQUIRE_POSTGRES is set but RLXF_TEST_POSTGRES_URL is not")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "database.db")
    url = postgres_url()
    if not url:
        pytest.skip("no PostgreSQL given (RLXF_TEST_POSTGRES_URL)")
    store = Store(url)
    with store.engine.begin() as connection:  # a clean schema for this run
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    return url

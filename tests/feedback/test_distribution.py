"""Leases, overlap, answers kept once: the store's rules, without the web app."""

import datetime as dt
import random

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from rlxf.feedback.distribution import Refused, next_assignment, record_answer
from rlxf.feedback.migrate import downgrade, revisions, upgrade
from rlxf.feedback.store import Answer, Assignment, Base, Project, Store

from .conftest import make_project


def test_migrations_build_the_models_schema_and_go_back_down(tmp_path):
    store = Store(tmp_path / "migrated.db")
    for revision in revisions():  # one step at a time, first schema to last
        upgrade(store.engine, revision)
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    downgrade(store.engine, "base")
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    upgrade(store.engine)
    assert {"users", "projects", "items", "answers"} <= set(inspect(store.engine).get_table_names())


def test_a_database_at_the_first_schema_keeps_its_rows_when_upgraded(tmp_path):
    store = Store(tmp_path / "old.db")
    upgrade(store.engine, revisions()[0])
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO projects (name, question, guidelines, overlap, aspects, span_tags, lease_seconds, created_at)"
            " VALUES ('old', 'pairwise', '', 2, '[]', '[]', 600, '2026-01-01 00:00:00')"
        )
    upgrade(store.engine)
    with store.session() as session:
        project = session.scalar(select(Project))
        assert (project.name, project.overlap, project.ordering, project.gold_rate, project.repeat_rate) == (
            "old",
            2,
            "random",
            0.0,
            0.0,
        )


def lease(store, project_id, user, seed=0):
    with store.session() as session:
        assignment = next_assignment(session, project_id, user, random.Random(seed))
        return None if assignment is None else (assignment.item_id, assignment.shown_order)


def answer(store, project_id, user, item_id, payload=None, key=None, **kwargs):
    with store.session() as session:
        stored, created = record_answer(
            session,
            project_id,
            user,
            item_id,
            payload or {"choice": "A"},
            idempotency_key=key or f"{user.name}-{item_id}-{random.random()}",
            app_version="test",
            **kwargs,
        )
        return stored.id, created


def test_each_item_goes_to_overlap_labelers_never_twice_to_one(store, tmp_path):
    project, users = make_project(store, tmp_path, overlap=2, labelers=3)
    given = {name: [] for name in users}
    for _ in range(3):  # rounds: each labeler takes and answers what is left for them
        for name, user in users.items():
            if (leased := lease(store, project, user)) is not None:
                assert lease(store, project, user) == leased  # a reload shows the same item
                answer(store, project, user, leased[0])
                given[name].append(leased[0])
    for name, items in given.items():
        assert len(items) == len(set(items)), name
    counts = [sum(item in items for items in given.values()) for item in range(1, 4)]
    assert counts == [2, 2, 2]
    assert all(lease(store, project, user) is None for user in users.values())


def test_an_expired_lease_frees_the_item_for_someone_else_but_not_the_same_labeler(store, tmp_path):
    project, users = make_project(store, tmp_path, overlap=1, rows=[{"prompt": "q", "responses": ["a", "b"]}])
    first, second = users["labeler0"], users["labeler1"]
    item, _ = lease(store, project, first)
    assert lease(store, project, second) is None  # held by the first labeler
    with store.session() as session:
        session.scalar(select(Assignment)).expires_at = dt.datetime(2000, 1, 1)
    assert lease(store, project, first) is None  # never the same item twice
    assert lease(store, project, second)[0] == item
    with pytest.raises(Refused, match="expired and the item went to someone else") as refused:
        answer(store, project, first, item)
    assert refused.value.status == 409
    answer(store, project, second, item)
    with store.session() as session:
        assert session.scalar(select(func.count(Answer.id))) == 1


def test_a_retried_submission_is_stored_once_and_a_correction_supersedes(store, tmp_path):
    project, users = make_project(store, tmp_path)
    user, other = users["labeler0"], users["labeler1"]
    item, _ = lease(store, project, user)
    first = answer(store, project, user, item, {"choice": "A"}, key="k1")
    assert first[1] and answer(store, project, user, item, {"choice": "A"}, key="k1") == (first[0], False)
    with pytest.raises(Refused, match="answered already"):
        answer(store, project, user, item, {"choice": "B"}, key="k2")
    corrected, created = answer(store, project, user, item, {"choice": "B"}, key="k3", supersedes=first[0])
    assert created and corrected != first[0]
    lease(store, project, other)
    with pytest.raises(Refused, match="belongs to another answer"):
        answer(store, project, other, item, key="k1")
    with store.session() as session:
        rows = session.scalars(select(Answer).order_by(Answer.id)).all()
        assert [(r.payload["choice"], r.supersedes) for r in rows] == [("A", None), ("B", first[0])]
        assert rows[0].shown_order and rows[0].app_version == "test"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"choice": "C"}, "choice: expected one of A, B, tie, both_bad, got 'C'"),
        ({"choice": "A", "reason": 5}, "reason: expected text, got int"),
        ("A", "answer: expected an object"),
    ],
)
def test_a_malformed_answer_is_refused_naming_the_field_and_nothing_is_stored(store, tmp_path, payload, message):
    project, users = make_project(store, tmp_path)
    item, _ = lease(store, project, users["labeler0"])
    with pytest.raises(Refused, match=message) as refused:
        answer(store, project, users["labeler0"], item, payload)
    assert refused.value.status == 422
    with store.session() as session:
        assert session.scalar(select(func.count(Answer.id))) == 0


def test_left_right_order_is_balanced_across_an_items_labelers(store, tmp_path):
    project, users = make_project(
        store, tmp_path, overlap=4, labelers=4, rows=[{"prompt": "q", "responses": ["a", "b"]}]
    )
    orders = [tuple(lease(store, project, user)[1]) for user in users.values()]
    assert len(set(orders)) == 2 and orders.count(orders[0]) == 2


def test_an_answer_to_an_item_not_given_is_refused(store, tmp_path):
    project, users = make_project(store, tmp_path)
    with pytest.raises(Refused, match="was not given to you") as refused:
        answer(store, project, users["labeler0"], 1)
    assert refused.value.status == 403

"""The app's holes, each tried as an attacker would: sessions that outlive a logout, login tries
in parallel or from a spoofed address, forked corrections, lone surrogates, huge ids, export
paths, and a 413 without the security headers."""

import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rlxf.data import DataError
from rlxf.feedback import admin, export
from rlxf.feedback.admin import add_member, create_project, create_user, import_items
from rlxf.feedback.security import HEADERS
from rlxf.feedback.server import ServeConfig, create_app, uvicorn_settings
from rlxf.feedback.store import Answer, Project, Store, User

from .conftest import make_project, write_items


def login_form(client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def log_in(app, name="labeler0", password="correct horse") -> tuple[TestClient, str]:
    client = TestClient(app, follow_redirects=False)
    response = client.post("/login", data={"name": name, "password": password, "csrf": login_form(client)})
    assert response.status_code == 303, response.text
    return client, re.search(r'data-csrf="([^"]+)"', client.get("/").text).group(1)


@pytest.fixture
def app(store, tmp_path):
    project, _ = make_project(store, tmp_path)
    return {"app": create_app(store, secret="s", max_body_bytes=4096), "project": project, "store": store}


# ---- sessions -----------------------------------------------------------------------


def test_a_cookie_saved_before_logout_no_longer_works(app):
    client, csrf = log_in(app["app"])
    saved = dict(client.cookies)
    assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
    replay = TestClient(app["app"], follow_redirects=False, cookies=saved)
    assert replay.get(f"/api/projects/{app['project']}/next").status_code == 401
    assert log_in(app["app"])[1]  # logging in again works, with a new session


def test_a_non_ascii_csrf_token_is_a_403_not_a_500(app):
    """The token a sender gives is compared as bytes: compare_digest refuses non-ASCII strings."""
    client, _ = log_in(app["app"])
    body = {"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "key-0001"}
    header = client.post(f"/api/projects/{app['project']}/answers", json=body, headers={"X-CSRF-Token": "é".encode()})
    form = TestClient(app["app"], follow_redirects=False)
    login_form(form)
    field = form.post("/login", data={"name": "labeler0", "password": "correct horse", "csrf": "\u00e9\u2603"})
    assert (header.status_code, field.status_code) == (403, 403)


def test_a_new_password_ends_every_earlier_session(app, store):
    client, _ = log_in(app["app"])
    with store.session() as session:
        admin.set_password(session.scalar(select(User).where(User.name == "labeler0")), "a new password")
    assert client.get(f"/api/projects/{app['project']}/next").status_code == 401
    log_in(app["app"], password="a new password")


# ---- login throttling ---------------------------------------------------------------


def test_twenty_simultaneous_tries_reach_the_password_check_at_most_five_times(app):
    clients = [TestClient(app["app"], follow_redirects=False) for _ in range(20)]
    forms = [login_form(client) for client in clients]
    start = threading.Barrier(20)

    def guess(index):
        start.wait()
        data = {"name": "labeler0", "password": f"guess {index}", "csrf": forms[index]}
        return clients[index].post("/login", data=data).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(guess, range(20)))
    assert statuses.count(200) <= 5 and statuses.count(429) >= 15, statuses


def test_the_count_is_shared_by_every_app_on_one_store(store, tmp_path):
    make_project(store, tmp_path)
    workers = [create_app(store, secret="s"), create_app(store, secret="s")]
    for attempt in range(5):
        client = TestClient(workers[attempt % 2], follow_redirects=False)
        client.post("/login", data={"name": "labeler0", "password": "guess", "csrf": login_form(client)})
    client = TestClient(workers[1], follow_redirects=False)
    data = {"name": "labeler0", "password": "correct horse", "csrf": login_form(client)}
    assert client.post("/login", data=data).status_code == 429


def test_a_spoofed_forwarded_for_does_not_reset_the_count(store, tmp_path):
    import uvicorn

    make_project(store, tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = uvicorn_settings(ServeConfig(db=str(tmp_path / "feedback.db"), port=port))
    server = uvicorn.Server(uvicorn.Config(create_app(store, secret="s"), **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        statuses = []
        for attempt in range(7):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
                spoof = {"X-Forwarded-For": f"203.0.113.{attempt}"}
                data = {"name": "labeler0", "password": "guess", "csrf": csrf}
                statuses.append(client.post("/login", data=data, headers=spoof).status_code)
        assert statuses[5:] == [429, 429], statuses
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- forked corrections -------------------------------------------------------------


def answered(database_url, tmp_path):
    """A project with one labeler's first answer; returns (client, headers, project, item, answer id)."""
    store = Store(database_url)
    store.upgrade()
    with store.session() as session:
        project = create_project(session, "forks", "pairwise")
        import_items(
            session, project, write_items(tmp_path / "items.jsonl", [{"prompt": "q", "responses": ["a", "b"]}])
        )
        user, token = create_user(session, "ana")
        add_member(session, project, user)
        project_id = project.id
    client = TestClient(create_app(store, secret="s"))
    headers = {"Authorization": f"Bearer {token}"}
    item = client.get(f"/api/projects/{project_id}/next", headers=headers).json()["item_id"]
    body = {"item_id": item, "answer": {"choice": "A"}, "idempotency_key": "first-answer"}
    first = client.post(f"/api/projects/{project_id}/answers", json=body, headers=headers).json()["answer_id"]
    return store, client, headers, project_id, item, first


def correct(client, headers, project, item, supersedes, key):
    body = {"item_id": item, "answer": {"choice": "B"}, "idempotency_key": key, "supersedes": supersedes}
    return client.post(f"/api/projects/{project}/answers", json=body, headers=headers)


def test_an_answer_is_corrected_once_in_sequence(database, tmp_path):
    store, client, headers, project, item, first = answered(database, tmp_path)
    second = correct(client, headers, project, item, first, "fix-one-1")
    assert second.status_code == 201
    fork = correct(client, headers, project, item, first, "fix-one-2")
    assert fork.status_code == 409 and "corrected already" in fork.json()["detail"]
    assert correct(client, headers, project, item, second.json()["answer_id"], "fix-two-1").status_code == 201
    store.engine.dispose()


def test_two_corrections_at_once_one_wins_the_other_gets_409(database, tmp_path):
    store, client, headers, project, item, first = answered(database, tmp_path)
    start = threading.Barrier(2)

    def send(key):
        start.wait()
        return correct(client, headers, project, item, first, key).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(send, ["at-once-1", "at-once-2"]))
    assert statuses == [201, 409]
    with store.session() as session:
        assert session.scalar(select(func.count(Answer.id)).where(Answer.supersedes == first)) == 1
    store.engine.dispose()


# ---- text, ids and sizes ------------------------------------------------------------


def test_a_lone_surrogate_is_refused_at_the_door_and_the_page_and_export_still_work(app, store, tmp_path):
    client, csrf = log_in(app["app"])
    item = int(re.search(r'data-item="(\d+)"', client.get(f"/projects/{app['project']}").text).group(1))
    raw = '{"item_id": ITEM, "answer": {"choice": "A", "reason": "\\ud800"}, "idempotency_key": "surrogate-1"}'
    raw = raw.replace("ITEM", str(item))
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    response = client.post(f"/api/projects/{app['project']}/answers", content=raw, headers=headers)
    assert response.status_code == 422 and "lone surrogate" in response.text
    with store.session() as session:
        assert session.scalar(select(func.count(Answer.id))) == 0
    assert client.get(f"/projects/{app['project']}").status_code == 200
    items = tmp_path / "bad.jsonl"
    items.write_text('{"prompt": "q\\udfff", "responses": ["a", "b"]}\n')
    with store.session() as session, pytest.raises(DataError, match="bad.jsonl, line 1, field 'prompt'"):
        import_items(session, session.get(Project, app["project"]), items)


def test_ids_past_the_database_integer_are_422_not_500(app):
    client, csrf = log_in(app["app"])
    huge = 2**63
    assert client.get(f"/api/projects/{huge}/next").status_code == 422
    assert client.get(f"/projects/{huge}").status_code == 422
    for body in ({"item_id": huge}, {"item_id": 1, "supersedes": huge}):
        body = {"answer": {"choice": "A"}, "idempotency_key": "huge-id-1", **body}
        response = client.post(f"/api/projects/{app['project']}/answers", json=body, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 422


def test_a_413_carries_the_security_headers(app):
    response = TestClient(app["app"]).post("/login", content=b"x" * 5000)
    assert response.status_code == 413
    for name, value in HEADERS.items():
        assert response.headers[name] == value


# ---- export -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "/abs/path", ".hidden", "a/b", "", "x" * 129])
def test_a_project_name_that_could_leave_the_export_folder_is_refused(store, name):
    with store.session() as session, pytest.raises(ValueError, match="project name must be"):
        create_project(session, name, "pairwise")


def test_an_old_project_with_any_name_exports_inside_out_and_whole(store, tmp_path, monkeypatch):
    make_project(store, tmp_path)
    with store.session() as session:
        session.scalar(select(Project)).name = "../../outside"  # as a store made before names were checked
    out = tmp_path / "snapshots"
    (folder,) = export.export_snapshot(store, out)
    assert folder.parent.parent == out and not (tmp_path / "outside").exists()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export.json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_snapshot(store, out)
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["v0001"]


def test_export_weight_by_reliability_is_passed_through_from_the_command_line(store, tmp_path):
    from rlxf.feedback.cli import FeedbackConfig, run_feedback

    project, _ = make_project(store, tmp_path, labelers=1)
    with store.session() as session:
        _, token = create_user(session, "ana")
        add_member(session, session.get(Project, project), session.scalar(select(User).where(User.name == "ana")))
    client, headers = TestClient(create_app(store, secret="s")), {"Authorization": f"Bearer {token}"}
    item = client.get(f"/api/projects/{project}/next", headers=headers).json()["item_id"]
    body = {"item_id": item, "answer": {"choice": "A"}, "idempotency_key": "weighted-1"}
    assert client.post(f"/api/projects/{project}/answers", json=body, headers=headers).status_code == 201
    out = tmp_path / "out"
    run_feedback(
        FeedbackConfig(action="export", db=str(tmp_path / "feedback.db"), out=str(out), weight_by_reliability=True)
    )
    (row,) = [json.loads(line) for line in next(out.glob("*/v0001/pairwise.jsonl")).read_text().splitlines()]
    assert row["weight"] == row["reliability"] == 0.5

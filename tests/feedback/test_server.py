"""The labeling app over HTTP (FastAPI's test client): answers, sessions, and every guard."""

import re

import fastapi.routing
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rlxf.feedback.admin import add_member, create_project, create_user, import_items
from rlxf.feedback.server import create_app
from rlxf.feedback.store import Answer, Item, Project, User

from .conftest import make_project, write_items

XSS = '<script>alert("x")</script><img src=x onerror="alert(1)"> [link](javascript:alert(2))'


@pytest.fixture
def app(store, tmp_path):
    project, _ = make_project(store, tmp_path, rows=[{"prompt": XSS, "responses": [XSS, "plain answer"]}])
    with store.session() as session:
        other = create_project(session, "other-project", "reaction")
        import_items(session, other, write_items(tmp_path / "other.jsonl", [{"prompt": "q", "responses": ["r"]}]))
        create_user(session, "boss", role="admin", password="admin password")
        outsider, token = create_user(session, "outsider", password="outsider pass")
        add_member(session, other, outsider)
    return {
        "app": create_app(store, secret="test-secret", max_body_bytes=4096),
        "project": project,
        "other": other.id,
        "token": token,
        "store": store,
    }


def logged_in(app, name="labeler0", password="correct horse") -> tuple[TestClient, str]:
    client = TestClient(app, follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post("/login", data={"name": name, "password": password, "csrf": csrf})
    assert response.status_code == 303, response.text
    home = client.get("/")
    return client, re.search(r'data-csrf="([^"]+)"', home.text).group(1)


def answers(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count(Answer.id)))


def test_a_labeler_answers_once_even_when_the_request_is_retried(app):
    client, csrf = logged_in(app["app"])
    page = client.get(f"/projects/{app['project']}")
    item = int(re.search(r'data-item="(\d+)"', page.text).group(1))
    body = {"item_id": item, "answer": {"choice": "B", "reason": "clearer"}, "idempotency_key": "key-0001"}
    first = client.post(f"/api/projects/{app['project']}/answers", json=body, headers={"X-CSRF-Token": csrf})
    again = client.post(f"/api/projects/{app['project']}/answers", json=body, headers={"X-CSRF-Token": csrf})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {"answer_id": first.json()["answer_id"], "duplicate": True}
    assert answers(app["store"]) == 1
    assert "Nothing left for you" in client.get(f"/projects/{app['project']}").text


def test_model_text_is_escaped_under_a_strict_content_security_policy(app):
    client, _ = logged_in(app["app"])
    page = client.get(f"/projects/{app['project']}")
    assert "<script>alert" not in page.text and "<img" not in page.text and 'href="javascript:' not in page.text
    assert "&lt;script&gt;alert" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"


def test_without_login_or_with_a_wrong_token_nothing_is_served(app):
    client = TestClient(app["app"], follow_redirects=False)
    assert client.get("/", headers={"accept": "text/html"}).headers["location"] == "/login"
    assert client.get(f"/api/projects/{app['project']}/next").status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert client.get(f"/api/projects/{app['project']}/next", headers=wrong).status_code == 401
    body = {"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "key-0002"}
    assert client.post(f"/api/projects/{app['project']}/answers", json=body, headers=wrong).status_code == 401
    assert answers(app["store"]) == 0


def test_a_token_works_without_a_session_but_only_in_its_own_projects(app):
    client = TestClient(app["app"])
    bearer = {"Authorization": f"Bearer {app['token']}"}
    task = client.get(f"/api/projects/{app['other']}/next", headers=bearer).json()
    assert task["responses"] == ["r"] and task["question"] == "reaction"
    body = {"item_id": task["item_id"], "answer": {"reaction": "love"}, "idempotency_key": "key-0003"}
    assert client.post(f"/api/projects/{app['other']}/answers", json=body, headers=bearer).status_code == 201
    for path in (f"/projects/{app['project']}", f"/api/projects/{app['project']}/next"):
        assert client.get(path, headers=bearer).status_code == 404  # not a member: as if it did not exist
    body = {"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "key-0004"}
    assert client.post(f"/api/projects/{app['project']}/answers", json=body, headers=bearer).status_code == 404
    assert answers(app["store"]) == 1


def test_writes_without_the_sessions_csrf_token_are_refused(app):
    client, csrf = logged_in(app["app"])
    item = client.get(f"/api/projects/{app['project']}/next").json()["item_id"]
    body = {"item_id": item, "answer": {"choice": "A"}, "idempotency_key": "key-0005"}
    path = f"/api/projects/{app['project']}/answers"
    assert client.post(path, json=body).status_code == 403
    assert client.post(path, json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    assert answers(app["store"]) == 0
    assert client.post(path, json=body, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_labelers_cannot_reach_admin_routes_or_other_projects_ids(app):
    client, csrf = logged_in(app["app"])
    headers = {"X-CSRF-Token": csrf}
    assert client.get("/admin").status_code == 403
    assert client.post("/admin/users", data={"name": "mallory", "csrf": csrf}).status_code == 403
    assert (
        client.post(f"/admin/projects/{app['project']}/members", data={"name": "labeler1", "csrf": csrf}).status_code
        == 403
    )
    other = app["other"]
    assert client.get(f"/projects/{other}").status_code == 404
    assert client.get(f"/api/projects/{other}/next").status_code == 404
    body = {"item_id": 2, "answer": {"reaction": "love"}, "idempotency_key": "key-0006"}
    assert client.post(f"/api/projects/{other}/answers", json=body, headers=headers).status_code == 404
    assert client.get("/projects/999").status_code == 404
    assert answers(app["store"]) == 0


@pytest.mark.parametrize(
    "payload, status",
    [
        ("{not json", 422),
        ('{"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "bad key!"}', 422),
        ('{"item_id": "one", "answer": {}, "idempotency_key": "key-0007"}', 422),
        ('{"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "key-0008", "pad": "' + "x" * 5000 + '"}', 413),
    ],
)
def test_malformed_and_oversized_requests_are_refused_and_nothing_is_stored(app, payload, status):
    client, csrf = logged_in(app["app"])
    client.get(f"/projects/{app['project']}")  # the item is leased: only the request is at fault
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    assert (
        client.post(f"/api/projects/{app['project']}/answers", content=payload, headers=headers).status_code == status
    )
    assert answers(app["store"]) == 0


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1/items.jsonl", "not in the import allow-list"),
        ("http://169.254.169.254/latest/meta-data", "not in the import allow-list"),
        ("file:///etc/passwd", "only http(s) URLs"),
        ("http://localhost/items.jsonl", "resolves to a non-public address"),
    ],
)
def test_imports_by_url_to_local_or_unlisted_hosts_are_refused(store, tmp_path, url, reason):
    make_project(store, tmp_path)
    with store.session() as session:
        create_user(session, "boss", role="admin", password="admin password")
    app = create_app(store, secret="s", import_hosts=["localhost"])
    client, csrf = logged_in(app, "boss", "admin password")
    response = client.post("/admin/projects/1/import-url", data={"url": url, "csrf": csrf})
    assert response.status_code == 400 and reason in response.json()["detail"], response.text
    with store.session() as session:
        assert session.scalar(select(func.count(Item.id))) == 3


def test_an_admin_sets_up_a_project_from_the_pages(store, tmp_path):
    with store.session() as session:
        create_user(session, "boss", role="admin", password="admin password")
    client, csrf = logged_in(create_app(store, secret="s"), "boss", "admin password")
    form = {
        "name": "helpfulness",
        "question": "rating",
        "overlap": "2",
        "aspects": "helpfulness, honesty",
        "csrf": csrf,
    }
    assert client.post("/admin/projects", data=form).status_code == 200
    created = client.post("/admin/users", data={"name": "ana", "password": "ana password", "csrf": csrf})
    assert "API token (shown once)" in created.text
    rows = write_items(tmp_path / "rate.jsonl", [{"prompt": "q", "responses": ["r"]}, {"prompt": "bad"}])
    with open(rows, "rb") as file:
        refused = client.post("/admin/projects/1/items", data={"csrf": csrf}, files={"file": ("rate.jsonl", file)})
    assert refused.status_code == 422 and "rate.jsonl, line 2, field 'responses'" in refused.json()["detail"]
    good = write_items(tmp_path / "good.jsonl", [{"prompt": "q", "responses": ["r"]}])
    with open(good, "rb") as file:
        assert (
            client.post(
                "/admin/projects/1/items", data={"csrf": csrf}, files={"file": ("good.jsonl", file)}
            ).status_code
            == 200
        )
    assert client.post("/admin/projects/1/members", data={"name": "ana", "csrf": csrf}).status_code == 200
    with store.session() as session:
        project = session.scalar(select(Project))
        assert (project.aspects, project.overlap, len(project.items)) == (["helpfulness", "honesty"], 2, 1)


def every_route(app) -> list:
    """The app's routes, those of included routers too: FastAPI 0.137 and later keep an included
    router as one node of ``app.routes`` (``iter_route_contexts`` expands it), earlier ones copy
    its routes in."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(expand(app.routes)) if expand else list(app.routes)


def test_every_project_route_refuses_a_labeler_from_another_project(app):
    """Swept over the app's routes, so a route added later is covered too: a labeler who is not
    a member gets 403 or 404 from every route that takes a project id, and nothing is stored."""
    client, csrf = logged_in(app["app"], "outsider", "outsider pass")
    routes = [r for r in every_route(app["app"]) if "{project_id}" in (getattr(r, "path", None) or "")]
    assert len(routes) >= 8
    for route in routes:
        path = route.path.replace("{project_id}", str(app["project"]))
        for method in route.methods - {"HEAD"}:
            data = {"csrf": csrf, "name": "outsider", "url": "https://example.com/x.jsonl"}
            if method == "GET":
                response = client.get(path)
            elif path.endswith("/answers"):
                body = {"item_id": 1, "answer": {"choice": "A"}, "idempotency_key": "sweep-0001"}
                response = client.post(path, json=body, headers={"X-CSRF-Token": csrf})
            else:
                response = client.post(path, data=data)
            assert response.status_code in (403, 404), (method, path, response.status_code)
    assert answers(app["store"]) == 0


def test_an_item_of_another_project_cannot_be_answered_through_ones_own(app):
    client = TestClient(app["app"])
    bearer = {"Authorization": f"Bearer {app['token']}"}  # outsider, a member of the other project
    client.get(f"/api/projects/{app['other']}/next", headers=bearer)
    body = {"item_id": 1, "answer": {"reaction": "love"}, "idempotency_key": "cross-0001"}  # item 1 is project 1's
    response = client.post(f"/api/projects/{app['other']}/answers", json=body, headers=bearer)
    assert response.status_code == 403 and answers(app["store"]) == 0


def test_repeated_failed_logins_are_refused_for_a_while(app):
    client = TestClient(app["app"], follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    for _ in range(5):
        wrong = client.post("/login", data={"name": "labeler0", "password": "guess", "csrf": csrf})
        assert wrong.status_code == 200 and "Wrong name or password" in wrong.text
    right = client.post("/login", data={"name": "labeler0", "password": "correct horse", "csrf": csrf})
    assert right.status_code == 429  # even the right password, until the window has passed
    assert logged_in(app["app"], "labeler1")[1]  # other accounts are not affected


def test_the_session_route_gives_a_logged_in_session_its_csrf_token_and_no_one_else(app):
    client, csrf = logged_in(app["app"])
    response = client.get("/api/session")
    with app["store"].session() as session:
        labeler = session.scalar(select(User.id).where(User.name == "labeler0"))
    assert response.status_code == 200 and response.json() == {"csrf": csrf, "user": labeler}
    assert response.headers["cache-control"] == "no-store"

    visitor = TestClient(app["app"], follow_redirects=False)
    refused = visitor.get("/api/session", headers={"accept": "text/html"})
    assert refused.status_code == 401 and "set-cookie" not in refused.headers  # no session started
    bearer = {"Authorization": f"Bearer {app['token']}"}
    assert visitor.get("/api/session", headers=bearer).status_code == 401  # a token has no session
    client.post("/logout", data={"csrf": csrf})
    assert client.get("/api/session").status_code == 401

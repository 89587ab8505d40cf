"""Every operation in the app's OpenAPI schema, fuzzed by schemathesis in-process (ASGI, no
network) as a visitor, a labeler and an admin: no request makes the server fail (5xx), and every
response carries the security headers."""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlxf.feedback.admin import create_user
from rlxf.feedback.security import HEADERS
from rlxf.feedback.server import create_app

from .conftest import make_project
from .test_server import logged_in

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,  # the same requests on every run: a failure here reproduces
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def app(store, tmp_path):
    make_project(store, tmp_path)
    with store.session() as session:
        create_user(session, "boss", role="admin", password="admin password")
    return create_app(store, secret="fuzz", max_body_bytes=8192, import_hosts=["data.example"])


def credentials(app, who: str) -> dict:
    """The cookie and CSRF header of a logged-in ``who`` (nothing for a visitor)."""
    if who == "visitor":
        return {}
    name, password = {"labeler": ("labeler0", "correct horse"), "admin": ("boss", "admin password")}[who]
    client, csrf = logged_in(app, name, password)
    return {"cookies": dict(client.cookies), "headers": {"X-CSRF-Token": csrf}}


def check(response, case) -> None:
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where} answered {response.status_code}: {response.text[:300]}"
    for name, value in HEADERS.items():
        assert response.headers.get(name.lower(), response.headers.get(name)) == [value], f"{where}: no {name}"


@pytest.mark.parametrize("who", ["visitor", "labeler", "admin"])
def test_fuzzed_requests_never_fail_the_server_and_always_carry_the_security_headers(app, who):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        signed_in = credentials(app, who)  # afresh: a fuzzed logout may have ended the last one

        @FUZZ
        @given(case=operation.as_strategy(), existing_project=st.booleans())
        def fuzz(case, existing_project):
            if existing_project and "project_id" in (case.path_parameters or {}):
                case.path_parameters["project_id"] = 1  # past the 404, into the route's own checks
            if isinstance(case.body, dict) and "csrf" in case.body and signed_in:
                case.body["csrf"] = signed_in["headers"]["X-CSRF-Token"]  # so forms reach their logic
            check(case.call(**signed_in), case)

        fuzz()


def test_the_schema_itself_is_served_with_the_security_headers(app):
    client, _ = logged_in(app)
    response = client.get("/openapi.json")
    assert response.status_code == 200 and re.search("/api/projects/", response.text)
    assert all(response.headers[name] == value for name, value in HEADERS.items())

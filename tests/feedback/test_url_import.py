"""Imports by URL: the fetch goes to the address that was checked (no second DNS answer can
send it to loopback), every failure is a clear 4xx, and a slow host holds no database lock."""

import json
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from rlxf.feedback import url_import
from rlxf.feedback.admin import create_user
from rlxf.feedback.routes import admin as admin_routes
from rlxf.feedback.server import create_app
from rlxf.feedback.store import Item
from rlxf.feedback.url_import import CheckedURL, ImportFailed, ImportTooLarge, check_import_url, fetch

from .conftest import make_project
from .test_server import logged_in

ITEMS = b"".join(json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]}).encode() + b"\n" for i in range(2))


class Files(BaseHTTPRequestHandler):
    """A loopback host: serves ITEMS and each way a fetch can go wrong, and records every request."""

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        if self.path == "/moved.jsonl":
            self.reply(302, b"", [("Location", "http://127.0.0.1/secret")])
        elif self.path == "/missing.jsonl":
            self.reply(404, b"no such file")
        elif self.path == "/big.jsonl":
            self.reply(200, b"x" * 10_000)
        elif self.path == "/trickle.jsonl":
            self.trickle()
        else:
            self.server.during_download()
            self.reply(200, ITEMS)

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def trickle(self):
        """One byte every 0.2 s: no single read times out, only a deadline on the whole stops it."""
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    server.seen, server.during_download = [], lambda: None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def on_loopback(server, path="/items.jsonl") -> CheckedURL:
    """As if ``data.example`` had been checked and found at the loopback host's address."""
    port = server.server_address[1]
    return CheckedURL(url=f"http://data.example:{port}{path}", host="data.example", address="127.0.0.1")


def test_the_fetch_connects_to_the_checked_address_and_names_the_host(host):
    assert fetch(on_loopback(host), max_bytes=4096) == ITEMS
    assert host.seen == [("/items.jsonl", f"data.example:{host.server_address[1]}")]


@pytest.mark.parametrize(
    "path, error, reason",
    [
        ("/moved.jsonl", ImportFailed, "redirects (to http://127.0.0.1/secret)"),
        ("/missing.jsonl", ImportFailed, "answered 404"),
        ("/big.jsonl", ImportTooLarge, "larger than 4096 bytes"),
        ("/trickle.jsonl", ImportFailed, "did not send the file within 1 s"),
    ],
)
def test_each_failed_fetch_says_why(host, path, error, reason):
    started = time.monotonic()
    with pytest.raises(error, match=reason.replace("(", r"\(").replace(")", r"\)")):
        fetch(on_loopback(host, path), max_bytes=4096, timeout_seconds=1)
    assert time.monotonic() - started < 10  # the trickle takes 20 s in all: the deadline cut it short
    assert [seen for seen, _ in host.seen] == [path]  # the redirect was not followed


def test_urls_with_credentials_or_bad_ports_are_refused():
    for url in ("http://user:pass@data.example/x.jsonl", "http://data.example:99999/x.jsonl"):
        with pytest.raises(url_import.UnsafeURL):
            check_import_url(url, ["data.example"])


@pytest.fixture
def admin_client(store, tmp_path):
    make_project(store, tmp_path)
    with store.session() as session:
        create_user(session, "boss", role="admin", password="admin password")

    def client(**settings):
        return logged_in(create_app(store, secret="s", **settings), "boss", "admin password")

    return client


def items(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count(Item.id)))


def test_a_name_that_resolves_elsewhere_on_the_second_lookup_cannot_reach_loopback(
    admin_client, store, host, monkeypatch
):
    """DNS rebinding: the first answer is public and passes the check, every later one is
    127.0.0.1, where the host listens. The fetch must not look the name up again."""
    real = socket.getaddrinfo
    lookups = []

    def rebinding(name, port, *args, **kwargs):
        if name != "data.example":
            return real(name, port, *args, **kwargs)
        lookups.append(name)
        address = "9.9.9.9" if len(lookups) == 1 else "127.0.0.1"  # a public address, then loopback
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    client, csrf = admin_client(import_hosts=["data.example"], import_timeout_seconds=1)
    url = f"http://data.example:{host.server_address[1]}/items.jsonl"
    response = client.post("/admin/projects/1/import-url", data={"url": url, "csrf": csrf})
    detail = response.json()["detail"]
    assert response.status_code == 400 and "(9.9.9.9)" in detail, detail
    assert host.seen == [] and lookups == ["data.example"]
    assert items(store) == 3


def test_a_failed_import_is_a_clear_400_and_imports_nothing(admin_client, store, host, monkeypatch):
    monkeypatch.setattr(admin_routes, "check_import_url", lambda url, hosts: on_loopback(host, "/missing.jsonl"))
    client, csrf = admin_client()
    response = client.post("/admin/projects/1/import-url", data={"url": "http://data.example/x", "csrf": csrf})
    assert response.status_code == 400 and response.json()["detail"] == "import failed: the host answered 404 Not Found"
    assert items(store) == 3


def test_the_database_is_free_while_the_file_downloads(admin_client, store, host, monkeypatch, tmp_path):
    """SQLite transactions here take the write lock up front: a download inside one would make
    every other write in the app wait for the slowest host."""
    writable = []

    def try_to_write():
        connection = sqlite3.connect(tmp_path / "feedback.db", timeout=0)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            writable.append(True)
        except sqlite3.OperationalError as error:
            writable.append(str(error))
        finally:
            connection.close()

    host.during_download = try_to_write
    monkeypatch.setattr(admin_routes, "check_import_url", lambda url, hosts: on_loopback(host, "/items.jsonl"))
    client, csrf = admin_client()
    response = client.post(
        "/admin/projects/1/import-url", data={"url": "http://data.example/items.jsonl", "csrf": csrf}
    )
    assert response.status_code == 200 and "Imported 2 items" in response.text, response.text
    assert writable == [True]
    assert items(store) == 5

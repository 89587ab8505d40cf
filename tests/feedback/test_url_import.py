"""Imports by URL: the fetch goes to the address that was checked (no second DNS answer can
send it to loopback), every failure is a clear 4xx, and a slow host holds no database lock."""

import functools
import ipaddress
import json
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
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
        elif self.path == "/slow-headers.jsonl":
            self.slow_headers()
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

    def slow_headers(self):
        """A header line every 0.2 s, never the end of them: only a deadline on the whole exchange stops it."""
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for index in range(100):
                self.wfile.write(f"X-Filler-{index}: x\r\n".encode())
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
        ("/slow-headers.jsonl", ImportFailed, "did not send the file within 1 s"),
    ],
)
def test_each_failed_fetch_says_why(host, path, error, reason):
    started = time.monotonic()
    with pytest.raises(error, match=reason.replace("(", r"\(").replace(")", r"\)")):
        fetch(on_loopback(host, path), max_bytes=4096, timeout_seconds=1)
    assert time.monotonic() - started < 5  # a trickle takes 20 s in all: the deadline cut it short
    assert [seen for seen, _ in host.seen] == [path]  # the redirect was not followed


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://user:pass@data.example/x.jsonl", "may not carry credentials"),
        ("http://data.example:99999/x.jsonl", "not a URL that can be imported"),
        ("http://[::1/x.jsonl", "not a URL that can be imported"),
        ("http://data.example:0/x.jsonl", "port 0"),
        ("ftp://data.example/x.jsonl", r"only http\(s\) URLs"),
    ],
)
def test_malformed_urls_credentials_and_odd_ports_are_refused_before_any_lookup(url, reason, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("looked up"))
    with pytest.raises(url_import.UnsafeURL, match=reason):
        check_import_url(url, ["data.example"])


@pytest.mark.parametrize(
    "address, public",
    [
        ("9.9.9.9", True),
        ("2606:4700::1111", True),
        ("64:ff9b::909:909", True),  # NAT64 of 9.9.9.9
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::127.0.0.1", False),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of the metadata service
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 of 10.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo, client 10.0.0.1
        ("ff02::1", False),
        ("fe80::1", False),
    ],
)
def test_only_public_addresses_pass_however_an_ipv4_one_is_wrapped(address, public):
    assert url_import.is_public(ipaddress.ip_address(address)) is public


def test_every_address_a_name_resolves_to_must_be_public(monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 80)) for a in ("9.9.9.9", "10.0.0.1")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(url_import.UnsafeURL, match=r"non-public address \(10.0.0.1\)"):
        check_import_url("http://data.example/x.jsonl", ["data.example"])


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


def test_a_name_that_resolves_elsewhere_on_the_second_lookup_cannot_reach_loopback(admin_client, store, monkeypatch):
    """DNS rebinding: the first answer is public and passes the check, every later one is
    127.0.0.1. The fetch must go to the checked address, with the name as Host and TLS name, and
    never look the name up again. (A stand-in transport answers, so no network is used.)"""
    lookups, requests = [], []

    def rebinding(name, port, *args, **kwargs):
        lookups.append(name)
        address = "9.9.9.9" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    def answer(request):
        requests.append((request.url.host, request.headers["host"], request.extensions.get("sni_hostname")))
        return httpx.Response(200, content=ITEMS)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(admin_routes, "fetch", functools.partial(fetch, transport=httpx.MockTransport(answer)))
    client, csrf = admin_client(import_hosts=["data.example"])
    url = "https://data.example:8443/items.jsonl"
    response = client.post("/admin/projects/1/import-url", data={"url": url, "csrf": csrf})
    assert response.status_code == 200, response.text
    assert requests == [("9.9.9.9", "data.example:8443", "data.example")] and lookups == ["data.example"]
    assert items(store) == 5


def test_a_failed_import_is_a_clear_400_and_imports_nothing(admin_client, store, host, monkeypatch):
    monkeypatch.setattr(admin_routes, "check_import_url", lambda url, hosts: on_loopback(host, "/missing.jsonl"))
    client, csrf = admin_client()
    response = client.post("/admin/projects/1/import-url", data={"url": "http://data.example/x.jsonl", "csrf": csrf})
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

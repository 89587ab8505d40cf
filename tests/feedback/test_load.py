"""Load: 20 labelers answering at once, 2,000+ answers, the server SIGKILLed and restarted in
the middle, submissions retried — every acknowledged answer stored exactly once, no item past
its overlap, no item twice to one labeler. On SQLite, and on PostgreSQL where one is given
(``RLXF_TEST_POSTGRES_URL``; `.ci/run` starts one)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from rlxf.feedback.admin import add_member, create_project, create_user
from rlxf.feedback.store import Answer, Candidate, Item, Store

LABELERS, ITEMS, OVERLAP, TARGET = 20, 720, 3, 2000


def populate(url: str) -> dict[str, str]:
    store = Store(url)
    store.upgrade()
    tokens = {}
    with store.session() as session:
        project = create_project(session, "load", "pairwise", overlap=OVERLAP)
        for i in range(ITEMS):
            item = Item(project_id=project.id, prompt=[{"role": "user", "content": f"q{i}"}], source=f"load {i}")
            session.add(item)
            session.flush()
            session.add_all([Candidate(item_id=item.id, position=p, text=f"r{i}{p}") for p in range(2)])
        for i in range(LABELERS):
            user, tokens[f"labeler{i}"] = create_user(session, f"labeler{i}")
            add_member(session, project, user)
    store.engine.dispose()
    return tokens


class Server:
    """`rlxf serve` in a process of its own, so it can be killed."""

    def __init__(self, url: str, folder):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url, self.folder, self.process = url, folder, None

    def start(self):
        env = {**os.environ, "RLXF_SECRET_KEY": "load-test"}
        argv = [sys.executable, "-m", "rlxf.cli", "serve", f"db={self.url}", f"port={self.port}"]
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/login", timeout=1)
                return
            except httpx.HTTPError:
                assert self.process.poll() is None, self.process.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.1)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def labeler(name, token, port, acknowledged, lock, stop):
    """Take the next item, answer it, retry on any failure with the same idempotency key; send
    every fifth answer a second time on purpose."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    count = 0
    while not stop.is_set():
        try:
            task = client.get("/api/projects/1/next")
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if task.status_code == 204:
            return
        assert task.status_code == 200, task.text
        item = task.json()["item_id"]
        key = f"{name}-{item:05d}"
        body = {"item_id": item, "answer": {"choice": "AB"[item % 2]}, "idempotency_key": key}
        for attempt in range(2 if count % 5 == 0 else 1):
            while True:
                try:
                    reply = client.post("/api/projects/1/answers", json=body)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)  # the server is down: the same key again once it is back
            assert reply.status_code in (200, 201), reply.text
            with lock:
                acknowledged.append((key, reply.json()["answer_id"], name, item))
        count += 1


@pytest.mark.slow
def test_concurrent_labelers_and_a_killed_server_lose_nothing_and_double_nothing(database, tmp_path):
    tokens = populate(database)
    server = Server(database, tmp_path)
    server.start()
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()
    threads = [
        threading.Thread(target=labeler, args=(name, token, server.port, acknowledged, lock, stop))
        for name, token in tokens.items()
    ]
    for thread in threads:
        thread.start()
    while len({k for k, *_ in acknowledged}) < TARGET // 2:
        time.sleep(0.05)
    server.kill()  # mid-run: requests in flight fail, clients retry
    killed_at = len(acknowledged)
    server.start()
    while len({k for k, *_ in acknowledged}) < TARGET and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    server.kill()

    keys = {key: answer_id for key, answer_id, *_ in acknowledged}
    assert len(keys) >= TARGET and killed_at < len(acknowledged)
    assert all(keys[key] == answer_id for key, answer_id, *_ in acknowledged)  # a retry got the same answer
    store = Store(database)
    with store.session() as session:
        stored = session.execute(select(Answer.idempotency_key, Answer.id, Answer.item_id, Answer.user_id)).all()
    stored_keys = Counter(row.idempotency_key for row in stored)
    assert all(stored_keys[key] == 1 for key in keys)  # every acknowledged answer, exactly once
    assert len(stored) - len(keys) <= LABELERS  # at most one unacknowledged answer per labeler at the stop
    assert max(Counter(row.item_id for row in stored).values()) <= OVERLAP
    assert len({(row.item_id, row.user_id) for row in stored}) == len(stored)

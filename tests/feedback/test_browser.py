"""The labeling pages in a real browser (Playwright driving the system Chromium, headless):
every question type answered with the keyboard, answers kept through a network outage,
injected markup inert, and the pairwise answers exported to train a reward model."""

import json
import os
import re
import shutil
import socket
import threading
import time

import pytest
from sqlalchemy import select

from rlxf.feedback.admin import add_member, create_project, create_user, import_items
from rlxf.feedback.export import export_snapshot
from rlxf.feedback.server import create_app
from rlxf.feedback.store import Answer, Project, User

from .conftest import write_items

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("RLXF_REQUIRE_BROWSER"):
        raise RuntimeError("browser tests required but no chromium on PATH (apt-get install chromium)")
    pytest.skip("no system chromium", allow_module_level=True)

XSS = "<script>alert('prompt')</script><img src=x onerror=\"alert('img')\">"
PROJECTS = {  # question -> (settings, items)
    "pairwise": (
        {},
        [{"prompt": f"pair {i} {XSS}", "responses": [f"good answer {i}", f"bad {XSS}"]} for i in range(4)],
    ),
    "ranking": ({}, [{"prompt": "rank these", "responses": ["first", "second", "third"]}]),
    "reaction": ({}, [{"prompt": "react", "responses": ["a reply"]}]),
    "rating": ({"aspects": ["helpfulness", "honesty"]}, [{"prompt": "rate", "responses": ["a reply"]}]),
    "spans": (
        {"span_tags": ["factual-error", "irrelevant"]},
        [{"prompt": "check", "responses": ["Paris is in Spain."]}],
    ),
    "verbal": ({}, [{"prompt": "advise", "responses": ["too long reply"]}]),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import uvicorn

    from rlxf.feedback.store import Store

    folder = tmp_path_factory.mktemp("site")
    store = Store(folder / "feedback.db")
    store.upgrade()
    with store.session() as session:
        user, _ = create_user(session, "ana", password="ana password")
        for question, (settings, rows) in PROJECTS.items():
            project = create_project(session, question, question, **settings)
            import_items(session, project, write_items(folder / f"{question}.jsonl", rows))
            add_member(session, project, user)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, secret="s"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "store": store, "folder": folder}
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=[*flags, "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, site):
    context = browser.new_context()
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(site["url"] + "/")
    tab.fill("input[name=name]", "ana")
    tab.fill("input[name=password]", "ana password")
    tab.keyboard.press("Enter")
    tab.wait_for_url(site["url"] + "/")
    yield tab
    context.close()


def answers(site, question):
    with site["store"].session() as session:
        project = session.scalar(select(Project).where(Project.name == question))
        return [a.payload for a in session.scalars(select(Answer).where(Answer.project_id == project.id))]


def open_project(page, site, question):
    with site["store"].session() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == question))
    page.goto(f"{site['url']}/projects/{project_id}")


def answered(page, site, question, expected):
    """Wait until the store holds ``expected`` and the page has moved on to what comes next."""
    wait_for(lambda: answers(site, question) == expected)
    page.wait_for_selector("#done")


def wait_for(condition, timeout=15):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_pairwise_by_keyboard_with_injected_markup_inert_then_exported_to_train_a_reward_model(page, site):
    open_project(page, site, "pairwise")
    for expected in range(1, 5):
        item = page.get_attribute("#task", "data-item")
        left = page.inner_text(".candidate[data-position='0'] .text")
        page.keyboard.press("1" if left.startswith("good") else "2")  # always prefer the good answer
        page.wait_for_selector(f"#done, #task:not([data-item='{item}'])")  # the next item is shown
        wait_for(lambda: len(answers(site, "pairwise")) == expected)
    assert page.is_visible("#done")
    assert page.dialogs == []  # neither the <script> nor the onerror handler ran
    choices = [a["choice"] for a in answers(site, "pairwise")]
    assert set(choices) <= {"A", "B"} and len(choices) == 4

    folder = export_snapshot(site["store"], site["folder"] / "snapshots", ["pairwise"])[0]
    rows = [json.loads(line) for line in (folder / "pairwise.jsonl").read_text().splitlines()]
    assert all(r["chosen"].startswith("good") and r["annotator"] == "ana" for r in rows)
    from rlxf.config import load_config
    from rlxf.recipes.reward_model import RewardModelConfig, train_reward_model

    run = site["folder"] / "rm"
    overrides = [f"output_dir={run}", "model.name=tiny-llama", f"data.path={folder / 'pairwise.jsonl'}"]
    overrides += [
        "data.max_length=128",
        "data.max_prompt_length=96",
        "data.eval_fraction=0.25",
        "train.max_steps=4",
        "train.batch_size=2",
    ]
    train_reward_model(load_config(RewardModelConfig, None, overrides))
    assert (run / "model" / "config.json").exists()


def test_reaction_rating_ranking_and_verbal_by_keyboard(page, site):
    open_project(page, site, "reaction")
    page.keyboard.press("2")
    answered(page, site, "reaction", [{"reaction": "like"}])

    open_project(page, site, "rating")
    for key in ("4", "2", "Enter"):  # helpfulness 4, then honesty 2, then send
        page.keyboard.press(key)
    answered(page, site, "rating", [{"scores": {"helpfulness": 4, "honesty": 2}}])

    open_project(page, site, "ranking")
    texts = [page.inner_text(f".candidate[data-position='{i}'] .text") for i in range(3)]
    best_first = sorted(range(3), key=lambda i: ["first", "second", "third"].index(texts[i]))
    for position in best_first:
        page.keyboard.press(str(position + 1))
    page.keyboard.press("Enter")
    answered(page, site, "ranking", [{"order": best_first}])

    open_project(page, site, "verbal")
    page.keyboard.type("Answer in one sentence.")
    page.keyboard.press("Control+Enter")
    answered(page, site, "verbal", [{"text": "Answer in one sentence."}])


def test_a_span_selected_and_tagged_by_keyboard(page, site):
    open_project(page, site, "spans")
    page.evaluate(
        """() => {
            const node = document.querySelector('.text.plain').firstChild;
            const range = document.createRange();
            range.setStart(node, 12); range.setEnd(node, 17);  // "Spain"
            getSelection().removeAllRanges(); getSelection().addRange(range);
        }"""
    )
    page.keyboard.press("1")
    assert "factual-error" in page.inner_text("#spans")
    page.keyboard.press("Enter")
    expected = [{"spans": [{"candidate": 0, "start": 12, "end": 17, "tag": "factual-error"}]}]
    answered(page, site, "spans", expected)


def test_an_answer_given_offline_waits_and_is_stored_once_when_the_network_returns(browser, site):
    with site["store"].session() as session:
        project = create_project(session, "offline", "reaction")
        import_items(
            session, project, write_items(site["folder"] / "offline.jsonl", [{"prompt": "p", "responses": ["r"]}])
        )
        user, _ = create_user(session, "ben", password="ben password")
        add_member(session, project, user)
        project_id = project.id
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(site["url"] + "/login")
    tab.fill("input[name=name]", "ben")
    tab.fill("input[name=password]", "ben password")
    tab.keyboard.press("Enter")
    tab.wait_for_url(site["url"] + "/")
    tab.goto(f"{site['url']}/projects/{project_id}")
    context.set_offline(True)
    tab.keyboard.press("1")
    tab.wait_for_selector("#unsent:not([hidden])")
    time.sleep(1)
    assert answers(site, "offline") == []
    context.set_offline(False)
    wait_for(lambda: answers(site, "offline") == [{"reaction": "love"}])
    tab.wait_for_selector("#done")
    assert tab.evaluate("localStorage.getItem('rlxf-unsent-answers')") == "[]"
    context.close()


def log_in(tab, site, name, password):
    tab.goto(site["url"] + "/login")
    tab.fill("input[name=name]", name)
    tab.fill("input[name=password]", password)
    tab.keyboard.press("Enter")
    tab.wait_for_url(site["url"] + "/")


def log_in_without_a_page(context, site, name, password):
    form = context.request.get(site["url"] + "/login").text()
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    login = {"name": name, "password": password, "csrf": login_csrf}
    assert context.request.post(site["url"] + "/login", form=login).ok


def test_answers_on_a_stale_page_survive_a_new_login_and_a_logout_and_are_stored_once(browser, site):
    """A login in another tab gives the session a new CSRF token, a logout ends it: the open
    page keeps its answer queued, gets the session's token again, and sends it once."""
    rows = [{"prompt": f"stale {i}", "responses": ["r"]} for i in range(2)]
    with site["store"].session() as session:
        project = create_project(session, "stale", "reaction")
        import_items(session, project, write_items(site["folder"] / "stale.jsonl", rows))
        user, _ = create_user(session, "cara", password="cara password")
        add_member(session, project, user)
        project_id = project.id
    context = browser.new_context()
    labeling, other = context.new_page(), context.new_page()  # two tabs sharing one cookie jar
    log_in(labeling, site, "cara", "cara password")
    labeling.goto(f"{site['url']}/projects/{project_id}")
    stale_token = labeling.get_attribute("body", "data-csrf")

    log_in(other, site, "cara", "cara password")  # a fresh session: the open page's token is stale
    assert other.get_attribute("body", "data-csrf") != stale_token
    first = labeling.get_attribute("#task", "data-item")
    labeling.keyboard.press("1")
    wait_for(lambda: answers(site, "stale") == [{"reaction": "love"}])
    labeling.wait_for_selector(f"#task:not([data-item='{first}'])")  # stored, so the next item is shown

    other.click("button:has-text('Log out')")  # the session ends: the next answer waits for a login
    other.wait_for_url(site["url"] + "/login")
    labeling.keyboard.press("2")
    labeling.wait_for_selector("#unsent:has-text('Log in again in another tab')")
    assert answers(site, "stale") == [{"reaction": "love"}]
    # log in again without opening a page, so no other tab's script sends the queue: the stale
    # page's own periodic retry must find the new session's token
    log_in_without_a_page(context, site, "cara", "cara password")
    wait_for(lambda: answers(site, "stale") == [{"reaction": "love"}, {"reaction": "like"}])
    labeling.wait_for_selector("#done")
    time.sleep(1)  # nothing is sent twice after the acknowledgement
    assert answers(site, "stale") == [{"reaction": "love"}, {"reaction": "like"}]
    assert labeling.evaluate("localStorage.getItem('rlxf-unsent-answers')") == "[]"
    context.close()


def test_a_waiting_answer_is_sent_only_as_the_labeler_who_gave_it(browser, site):
    """Erin's answer waits after her logout; Finn then logs in on the same browser. Sent under
    Finn's session it would be stored as his (both label the item): it waits for Erin instead."""
    with site["store"].session() as session:
        project = create_project(session, "shared-browser", "reaction", overlap=2)
        import_items(
            session, project, write_items(site["folder"] / "shared.jsonl", [{"prompt": "p", "responses": ["r"]}])
        )
        for name in ("erin", "finn"):
            user, _ = create_user(session, name, password=f"{name} password")
            add_member(session, project, user)
        project_id = project.id

    def stored():
        with site["store"].session() as session:
            query = select(User.name, Answer.payload).join(User, User.id == Answer.user_id)
            return [tuple(row) for row in session.execute(query.where(Answer.project_id == project_id))]

    context = browser.new_context()
    labeling, other = context.new_page(), context.new_page()
    log_in(labeling, site, "erin", "erin password")
    labeling.goto(f"{site['url']}/projects/{project_id}")
    other.goto(site["url"] + "/")
    other.click("button:has-text('Log out')")
    other.wait_for_url(site["url"] + "/login")
    labeling.keyboard.press("1")
    labeling.wait_for_selector("#unsent:has-text('Log in again in another tab')")

    log_in_without_a_page(context, site, "finn", "finn password")
    labeling.wait_for_selector("#unsent:has-text('of another account')", timeout=15_000)
    time.sleep(1)
    assert stored() == []
    assert "erin" not in context.request.get(site["url"] + "/").text()  # the browser's session is Finn's

    log_in_without_a_page(context, site, "erin", "erin password")
    wait_for(lambda: stored() == [("erin", {"reaction": "love"})])
    labeling.wait_for_selector("#done")
    context.close()

"""People as the watch's gold, end to end on a tiny model: the run hands samples to the feedback app,
people answer them, the export carries each answer's step back, and the report reads them as gold."""

import json
import random
import re

from sqlalchemy import select

from rlxf.cli import main
from rlxf.feedback.distribution import next_assignment, record_answer
from rlxf.feedback.store import Candidate, Project, Store, User
from tests.integration.test_safety import online


def react_to_everything(db, project_name: str, name: str, likes) -> int:
    """Answer every item of a reaction project as ``likes(text)`` says (like, else dislike)."""
    store, rng, count = Store(db), random.Random(0), 0
    while True:
        with store.session() as session:
            user = session.scalar(select(User).where(User.name == name))
            project = session.scalar(select(Project).where(Project.name == project_name))
            assignment = next_assignment(session, project.id, user, rng)
            if assignment is None:
                return count
            text = session.get(Candidate, assignment.shown_order[0]).text
            reaction = {"reaction": "like" if likes(text) else "dislike"}
            key = f"{name}-{assignment.item_id}"
            record_answer(session, project.id, user, assignment.item_id, reaction, idempotency_key=key, app_version="t")
            count += 1


def clean_digits(text: str) -> bool:  # what the proxy (a digit anywhere) stands for: only 5 to 9
    return bool(re.search(r"[5-9]", text)) and not re.search(r"[0-4]", text)


def any_digit(text: str) -> bool:  # people who want what the proxy rewards
    return bool(re.search(r"[0-9]", text))


def test_people_answers_are_read_back_onto_the_steps_as_gold(tmp_path, prompt_file):
    run = tmp_path / "run"
    _, rows = online(
        run, prompt_file, "train.max_steps=20", "watch.for_labelers_every=1", "watch.for_labelers_samples=32"
    )
    assert rows[-1]["reward"] > 0.9  # the proxy is hacked, as in test_watch.py
    handed = [json.loads(line) for line in (run / "watch" / "for_labelers.jsonl").read_text().splitlines()]
    assert [r["step"] for r in handed] == [step for step in range(1, 21) for _ in range(32)]
    assert handed[0]["responses"][0]["model"] == f"{run}/step-1"

    db = tmp_path / "feedback.db"
    verdicts = {}
    for rule in (clean_digits, any_digit):
        name = rule.__name__.replace("_", "-")
        common = [f"db={db}", f"project={name}"]
        assert main(["feedback", "create-project", f"db={db}", f"name={name}", "question=reaction"]) == 0
        assert main(["feedback", "import", *common, f"file={run / 'watch' / 'for_labelers.jsonl'}"]) == 0
        if rule is clean_digits:
            assert main(["feedback", "add-user", f"db={db}", "name=ana"]) == 0
        assert main(["feedback", "add-member", *common, "name=ana"]) == 0
        assert react_to_everything(db, name, "ana", rule) == 20 * 32
        assert main(["feedback", "export", f"db={db}", f"out={tmp_path / 'snapshots'}", f"projects=[{name}]"]) == 0
        snapshot = tmp_path / "snapshots" / name / "v0001"
        assert main(["report", str(run), f"labels={snapshot}", "labels_window=3"]) == 0
        verdicts[name] = json.loads((run / "watch" / "people.json").read_text()), (run / "report.md").read_text()

    people, report = verdicts["clean-digits"]
    assert people["answers"] == 20 * 32 and [p["step"] for p in people["series"]] == list(range(1, 21))
    assert 1 <= people["parted_at_step"] < 20 and people["series"][-1]["people"] < 0.5
    assert "**Over-optimization, by people's verdict**" in report and "report/people.png" in report
    people, report = verdicts["any-digit"]
    assert people["parted_at_step"] is None and "People's verdict did not fall while the reward rose" in report

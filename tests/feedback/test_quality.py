"""Label quality: gold items and repeats in the queues, agreement statistics checked by hand,
an AI judge asked in both orders, reward models ordering the questions, the quality page."""

import json
import math
import random
import re
from types import SimpleNamespace

import pytest
import torch
from sqlalchemy import select

from rlxf.feedback.admin import add_member, create_project, create_user, import_items
from rlxf.feedback.ai import judge_pairs, prioritize
from rlxf.feedback.distribution import next_assignment, record_answer
from rlxf.feedback.export import export_snapshot
from rlxf.feedback.quality import cohens_kappa, krippendorff_alpha, quality_report
from rlxf.feedback.server import create_app
from rlxf.feedback.store import Candidate, Item, Project, User
from rlxf.rewards.judge import LLMJudge

from .conftest import write_items


def test_cohens_kappa_by_hand():
    # observed agreement 4/5 = 0.8; chance: rater 1 has {0: 2, 1: 2, tie: 1}, rater 2 {0: 1, 1: 3, tie: 1}
    # p_e = (2*1 + 2*3 + 1*1) / 25 = 0.36; kappa = (0.8 - 0.36) / (1 - 0.36) = 0.6875
    assert cohens_kappa([0, 0, 1, 1, "tie"], [0, 1, 1, 1, "tie"]) == pytest.approx(0.6875)


def test_krippendorff_alpha_by_hand():
    # pairable values: item 1 (0, 0), item 2 (1, 1), item 3 (0, 1); item 4 has one label and drops out
    # coincidences o00 = 2, o11 = 2, o01 = o10 = 1; n0 = n1 = 3, n = 6
    # D_o = 2 / 6; D_e = 2 * n0 * n1 / (n (n - 1)) = 18 / 30; alpha = 1 - (1/3) / 0.6 = 4/9
    labels = {1: {"a": 0, "b": 0}, 2: {"a": 1, "b": 1}, 3: {"a": 0, "b": 1}, 4: {"b": 1}}
    assert krippendorff_alpha(labels) == pytest.approx(4 / 9)


def quality_project(store, tmp_path, **settings):
    rows = [{"prompt": f"task {i}", "responses": [f"good {i}", f"bad {i}"]} for i in range(6)]
    rows += [{"prompt": f"gold {i}", "responses": [f"good g{i}", f"bad g{i}"], "gold": {"better": 0}} for i in range(2)]
    with store.session() as session:
        project = create_project(session, "quality", "pairwise", overlap=2, **settings)
        import_items(session, project, write_items(tmp_path / "items.jsonl", rows))
        for name in ("careful", "contrary"):
            add_member(session, project, create_user(session, name, password="long password")[0])
        return project.id


def label_everything(store, project_id, name, prefers, seed):
    """``prefers`` the response at file position 0 or 1, whatever order it is shown in."""
    rng, count = random.Random(seed), 0
    while True:
        with store.session() as session:
            user = session.scalar(select(User).where(User.name == name))
            assignment = next_assignment(session, project_id, user, rng)
            if assignment is None:
                return count
            first_shown = session.get(Candidate, assignment.shown_order[0]).position
            choice = "A" if first_shown == prefers else "B"
            record_answer(
                session,
                project_id,
                user,
                assignment.item_id,
                {"choice": choice},
                idempotency_key=f"{name}-{assignment.item_id:05d}",
                app_version="test",
            )
            count += 1


def test_gold_items_and_repeats_measure_accuracy_and_consistency(store, tmp_path):
    project = quality_project(store, tmp_path, gold_rate=0.3, repeat_rate=0.3)
    label_everything(store, project, "careful", prefers=0, seed=1)
    label_everything(store, project, "contrary", prefers=1, seed=2)
    with store.session() as session:
        report = quality_report(session, session.get(Project, project))
        kinds = [i.kind for i in session.scalars(select(Item))]
    careful, contrary = report["labelers"]["careful"], report["labelers"]["contrary"]
    assert careful["gold"] >= 1 and careful["repeats"] >= 1 and kinds.count("repeat") >= 2
    assert (careful["gold_accuracy"], careful["consistency"]) == (1.0, 1.0)
    assert (contrary["gold_accuracy"], contrary["consistency"]) == (0.0, 1.0)
    # on the 6 tasks both answered, every label differs and each labeler always says the same:
    # p_o = 0, p_e = 0 -> kappa 0; alpha is negative (systematic disagreement)
    assert report["kappa_pairs"]["careful / contrary"] == 0.0 and report["alpha"] < 0
    assert report["disputed_items"] == sorted(report["disputed_items"]) and len(report["disputed_items"]) == 6

    folder = export_snapshot(store, tmp_path / "out", min_gold_accuracy=0.5)[0]
    rows = [json.loads(line) for line in (folder / "pairwise.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["annotator"] for r in rows} == {"careful"}  # tasks only, contrary left out
    assert all(
        r["chosen"].startswith("good")
        and r["reliability"] == pytest.approx((careful["gold"] + 1) / (careful["gold"] + 2))
        for r in rows
    )
    assert json.loads((folder / "manifest.json").read_text())["excluded_labelers"] == ["contrary"]


class StubEngine:
    """A judge model: ``pick`` maps (response A, response B) to its reply."""

    def __init__(self, pick):
        self.pick = pick

    def generate(self, chats, sampling):
        texts = []
        for chat in chats:
            question = chat[-1]["content"]
            a = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", question, re.DOTALL).group(1)
            b = re.search(r"\[Response B\]\n(.*?)\n\nWhich", question, re.DOTALL).group(1)
            texts.append(self.pick(a, b))
        return SimpleNamespace(texts=texts)


def test_a_judge_asked_in_both_orders_is_compared_with_the_peoples_majority(store, tmp_path):
    project = quality_project(store, tmp_path)
    label_everything(store, project, "careful", prefers=0, seed=1)
    fair = LLMJudge(
        mode="pairwise",
        engine=StubEngine(lambda a, b: '{"winner": "A"}' if a.startswith("good") else '{"winner": "B"}'),
    )
    biased = LLMJudge(mode="pairwise", engine=StubEngine(lambda a, b: '{"winner": "A"}'))
    mute = LLMJudge(mode="pairwise", engine=StubEngine(lambda a, b: "no idea"))
    with store.session() as session:
        project_row = session.get(Project, project)
        assert judge_pairs(session, project_row, fair, "fair-judge") == {"items": 6, "answers": 12, "unparsed": 0}
        assert judge_pairs(session, project_row, fair, "fair-judge")["items"] == 0  # asked once per item
        judge_pairs(session, project_row, biased, "biased-judge")
        assert judge_pairs(session, project_row, mute, "mute-judge") == {"items": 6, "answers": 0, "unparsed": 12}
    with store.session() as session:
        judges = quality_report(session, session.get(Project, project))["judges"]
    assert judges["fair-judge"] == {
        "items": 6,
        "position_consistency": 1.0,
        "agreement_with_majority": 1.0,
        "compared": 6,
    }
    assert judges["biased-judge"]["position_consistency"] == 0.0
    folder = export_snapshot(store, tmp_path / "out")[0]
    assert len((folder / "ai_pairwise.jsonl").read_text().splitlines()) == 24  # 12 answers from each judge that replied


class LengthReward:
    """A reward model stub: the reward is the response's length times ``scale``."""

    def __init__(self, scale):
        self.scale = scale

    def score(self, prompts, completions):
        return SimpleNamespace(rewards=torch.tensor([self.scale * len(c) for c in completions], dtype=torch.float32))


def test_reward_models_set_priorities_and_the_active_order_asks_the_least_sure_first(store, tmp_path):
    rows = [{"prompt": "q", "responses": ["aaa", "b"]}, {"prompt": "q", "responses": ["a", "b"]}]
    with store.session() as session:
        project = create_project(session, "active", "pairwise", ordering="active")
        import_items(session, project, write_items(tmp_path / "items.jsonl", rows))
        user, _ = create_user(session, "ana")
        add_member(session, project, user)
        assert prioritize(session, project, [LengthReward(1.0)]) == 2
        first, second = session.scalars(select(Item).order_by(Item.id)).all()
        # item 1: r0 - r1 = 2, p = sigmoid(2) = 0.8808, priority = 1 - |2p - 1| = 0.2384; item 2: p = 1/2, priority 1
        assert first.model_preference == pytest.approx(1 / (1 + math.exp(-2)))
        assert (first.priority, second.priority) == (pytest.approx(0.2384, abs=1e-4), pytest.approx(1.0))
        assert next_assignment(session, project.id, user, random.Random(0)).item_id == second.id
        # an ensemble that disagrees: p = 0.8808 and 0.5, mean 0.6904, spread (pstdev) 0.1904
        prioritize(session, project, [LengthReward(1.0), LengthReward(0.0)])
        assert first.priority == pytest.approx(1 - abs(2 * 0.69041 - 1) + 0.19041, abs=1e-4)


def test_the_quality_page_is_for_admins(store, tmp_path):
    project = quality_project(store, tmp_path)
    label_everything(store, project, "careful", prefers=0, seed=1)
    label_everything(store, project, "contrary", prefers=1, seed=2)
    with store.session() as session:
        create_user(session, "boss", role="admin", password="admin password")
    app = create_app(store, secret="s")
    from .test_server import logged_in

    admin_client, _ = logged_in(app, "boss", "admin password")
    page = admin_client.get(f"/admin/projects/{project}/quality")
    assert page.status_code == 200 and "careful" in page.text and "Krippendorff" in page.text
    assert page.text.count('class="disputed"') == 6  # careful and contrary disagree on every task
    plot = admin_client.get(f"/admin/projects/{project}/quality.png")
    assert plot.headers["content-type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    labeler_client, _ = logged_in(app, "careful", "long password")
    assert labeler_client.get(f"/admin/projects/{project}/quality").status_code == 403


def test_a_new_round_of_candidates_is_generated_by_a_model_and_linked_to_it(store, tmp_path):
    from rlxf.data.records import Prompt
    from rlxf.data.templating import ChatEncoder
    from rlxf.feedback.ai import generate_items
    from rlxf.models import load_causal_lm, load_tokenizer
    from rlxf.rollout import HFEngine, SamplingParams

    engine = HFEngine(
        load_causal_lm("tiny-llama").eval(),
        ChatEncoder(load_tokenizer("tiny-llama"), max_length=64, max_prompt_length=32),
    )
    prompts = [
        Prompt([{"role": "user", "content": f"say {i}"}], source=f"prompts.jsonl, line {i + 1}") for i in range(2)
    ]
    with store.session() as session:
        project = create_project(session, "round-2", "pairwise")
        sampling = SamplingParams(max_new_tokens=6, n=2)
        assert generate_items(session, project, prompts, engine, sampling, model_name="runs/dpo/model") == 2
        items = session.scalars(select(Item).order_by(Item.id)).all()
        assert [len(i.candidates) for i in items] == [2, 2]
        assert {c.model for i in items for c in i.candidates} == {"runs/dpo/model"}
        assert items[1].prompt == prompts[1].messages and "line 2" in items[1].source
        with pytest.raises(ValueError, match="a reaction question takes 1-1 responses per item, not n=2"):
            generate_items(session, create_project(session, "r", "reaction"), prompts, engine, sampling, model_name="m")


def test_ratings_get_an_alpha_per_aspect_and_items_are_listed_disputed_first(store, tmp_path):
    rows = [{"prompt": f"rate {i}", "responses": [f"reply {i}"]} for i in range(3)]
    with store.session() as session:
        project = create_project(session, "rated", "rating", overlap=2, aspects=["helpfulness", "honesty"])
        import_items(session, project, write_items(tmp_path / "items.jsonl", rows))
        people = [create_user(session, name)[0] for name in ("ana", "ben")]
        for user in people:
            add_member(session, project, user)
        for user in people:
            while (assignment := next_assignment(session, project.id, user, random.Random(0))) is not None:
                # both agree on helpfulness (the item's number + 1); on honesty ben is one point off
                score = assignment.item_id + 1
                honesty = score if user.name == "ana" else score % 5 + 1
                answer = {"scores": {"helpfulness": score, "honesty": honesty}}
                record_answer(
                    session,
                    project.id,
                    user,
                    assignment.item_id,
                    answer,
                    idempotency_key=f"{user.name}-{assignment.item_id:05d}",
                    app_version="t",
                )
        report = quality_report(session, project)
    assert report["aspect_alpha"]["helpfulness"] == pytest.approx(1.0)
    assert report["aspect_alpha"]["honesty"] < 1.0

    pairwise = quality_project(store, tmp_path)
    label_everything(store, pairwise, "careful", prefers=0, seed=1)
    with store.session() as session:
        items = quality_report(session, session.get(Project, pairwise))["items"]
    assert len(items) == 6 and all(row["labels"] == {"careful": 0} and row["majority"] == 0 for row in items)

"""`rlxf annotate` and `rlxf judge-data` with scripted judges: ratings per judge and aspect, the
aggregates, pairs, agreement with people, resuming, and the judge's training rows."""

import json

import pytest

from rlxf.config import ConfigError, load_config
from rlxf.data import read_demonstrations, read_preferences
from rlxf.recipes.ai_feedback import AnnotateConfig, JudgeDataConfig, annotate, write_judge_data


class ScriptedEngine:
    def __init__(self, reply):
        self.reply, self.asked = reply, []

    def generate(self, prompts, sampling):
        questions = [p[-1]["content"] for p in prompts]
        self.asked += questions
        return type("R", (), {"texts": [self.reply(q) for q in questions]})()


def response_of(question, tag="[Response]\n"):
    return question.split(tag)[1].split("\n")[0]


def fair(question):  # rates what people like (good) 5, the rest 1
    return '{"score": %d}' % (5 if response_of(question).startswith("good") else 1)


def indifferent(question):  # rates everything 3
    return '{"score": 3}'


def mute(question):
    return "I cannot say."


@pytest.fixture
def judges(monkeypatch):
    engines = {"fair": ScriptedEngine(fair), "indifferent": ScriptedEngine(indifferent), "mute": ScriptedEngine(mute)}
    monkeypatch.setattr("rlxf.rewards.judge._load_engine", lambda model, *_: engines[model])
    return engines


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"poor answer {i}"} for i in range(10)
    ]
    rows.append({"prompt": "question tied", "chosen": "good one", "rejected": "good two", "tie": True})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path, data, *overrides):
    return annotate(
        load_config(AnnotateConfig, None, [f"output_dir={tmp_path / 'out'}", f"data.path={data}", *overrides])
    )


def test_rating_mode_measures_each_judge_and_aggregate_against_people(tmp_path, pairs, judges):
    results = run(tmp_path, pairs, "judges=[fair,indifferent,mute]", "aspects=[helpfulness,honesty]")
    people = results["agreement_with_people"]
    assert people["judge fair"]["agreement"] == 1.0  # 10 decided right and the tie called a tie
    assert people["judge fair"]["kappa"] == pytest.approx(1.0)
    assert people["judge indifferent"]["accuracy_on_decided"] == 0.0  # calls everything a tie
    assert people["judge mute"]["unanswered"] == 11 and people["judge mute"]["compared"] == 0
    assert people["mean"]["agreement"] == 1.0 and people["aspect:honesty"]["agreement"] == 1.0
    # majority: fair votes, indifferent is tied (no vote), mute has none -> fair's choice
    assert people["majority"]["accuracy_on_decided"] == 1.0
    assert results["rated_share"] == {"fair": 1.0, "indifferent": 1.0, "mute": 0.0}
    # 11 items × 2 candidates × 2 aspects asked of each judge
    assert all(len(engine.asked) == 44 for engine in judges.values())
    assert all("Rate how honest" in q for q in judges["fair"].asked[22:])
    # both positions were people's choice, so a position-biased judge could not look good
    annotations = [json.loads(line) for line in (tmp_path / "out/annotations.jsonl").read_text().splitlines()]
    labels = [row["people"] for row in annotations]
    assert annotations[0]["replies"][2] == [["I cannot say."] * 2] * 2  # the mute judge's replies are kept
    assert {0, 1, "tie"} <= set(labels)
    written, _ = read_preferences(tmp_path / "out/pairs.jsonl")
    assert len(written) == 10 and all(p.chosen.startswith("good") for p in written)  # the tie left out
    assert results["pairs"]["tied_or_unrated"] == 1
    report = (tmp_path / "out/report.md").read_text()
    assert "| judge fair | 11 | 1.000 | 1.000 |" in report


def test_pairwise_mode_asks_both_orders(tmp_path, pairs, judges):
    def compare(question):  # prefers the good answer, but says A when both are good
        a, b = response_of(question, "[Response A]\n"), response_of(question, "[Response B]\n")
        return '{"winner": "%s"}' % ("B" if b.startswith("good") and not a.startswith("good") else "A")

    judges["fair"].reply = compare
    judges["indifferent"].reply = lambda question: '{"winner": "A"}'  # position-biased: always the first shown
    results = run(
        tmp_path, pairs, "judges=[fair,indifferent]", "aspects=[overall]", "mode=pairwise", "aggregate=majority"
    )
    fair, biased = (results["agreement_with_people"][f"judge {j}"] for j in ("fair", "indifferent"))
    # decided pairs: right in both orders; the tie: A once, then A again = one win each -> tie
    assert fair["agreement"] == 1.0 and len(judges["fair"].asked) == 22
    # always A wins once and loses once: a tie on every item, no pair of its own
    assert biased["accuracy_on_decided"] == 0.0 and biased["compared"] == 11
    assert results["pairs"]["written"] == 10  # the majority: fair votes, the biased judge abstains


def test_an_interrupted_annotation_picks_up_where_it_was(tmp_path, pairs, judges):
    first = run(tmp_path, pairs, "judges=[fair]", "aspects=[helpfulness]", "items_per_chunk=4")
    path = tmp_path / "out/annotations.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:20])  # killed while writing the second chunk
    judges["fair"].asked.clear()
    again = run(tmp_path, pairs, "judges=[fair]", "aspects=[helpfulness]", "items_per_chunk=4")
    assert len(judges["fair"].asked) == 2 * 7  # only the 7 items not kept
    assert again["agreement_with_people"] == first["agreement_with_people"]
    with pytest.raises(ConfigError, match="other items or settings"):
        run(tmp_path, pairs, "judges=[fair]", "aspects=[honesty]")


def test_candidate_sets_and_their_gold(tmp_path, judges):
    path = tmp_path / "sets.jsonl"
    rows = [
        {"prompt": "q", "responses": ["poor", "good", "poor too"], "gold": {"better": 1}},
        {"prompt": "r", "responses": ["good"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run(tmp_path, path, "judges=[fair]", "aspects=[helpfulness]")
    assert results["labeled_by_people"] == 1 and results["agreement_with_people"]["mean"]["agreement"] == 1.0
    written, _ = read_preferences(tmp_path / "out/pairs.jsonl")
    assert [(p.chosen, p.rejected in ("poor", "poor too")) for p in written] == [("good", True)]
    with pytest.raises(ConfigError, match="two candidates"):
        run(tmp_path, path, "judges=[fair]", "mode=pairwise")
    for bad in ("1", 7, True):
        rows[0]["gold"] = {"better": bad}
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(ConfigError, match="item 1, field 'gold.better'"):
            run(tmp_path, path, "judges=[fair]", "aspects=[helpfulness]")


@pytest.mark.parametrize(
    "override, message",
    [
        ("aspects=[style]", "not one of"),
        ("aggregate=aspect:honesty", "aggregate must be"),
        ("judges=[fair,fair]", "different judge models"),
        ("mode=likert", "rating or pairwise"),
    ],
)
def test_bad_settings_are_refused(override, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        load_config(AnnotateConfig, None, ["aspects=[helpfulness]", override])


def test_judge_data_writes_both_orders_and_keeps_the_held_out_pairs(tmp_path, pairs):
    results = write_judge_data(
        load_config(JudgeDataConfig, None, [f"output_dir={tmp_path}", f"data.path={pairs}", "data.eval_fraction=0.3"])
    )
    rows, _ = read_demonstrations(tmp_path / "train.jsonl")
    held, _ = read_preferences(tmp_path / "held_out.jsonl")
    assert len(rows) == results["train_rows"] == 2 * (11 - len(held)) and held
    verdicts = [json.loads(r.completion)["winner"] for r in rows]
    for row, verdict in zip(rows, verdicts):
        question = row.prompt[-1]["content"]
        a = response_of(question, "[Response A]\n")
        assert (
            verdict == "tie"
            if a.startswith("good") and "tied" in question
            else verdict == ("A" if a.startswith("good") else "B")
        )
    assert verdicts.count("A") == verdicts.count("B")
    assert {p.tie for p in held} <= {True, False} and sum(p.tie for p in held) + sum(
        v == "tie" for v in verdicts
    ) // 2 == 1
    assert row.prompt[0]["role"] == "system"

"""The LLM judge: reply parsing, score mapping, both orders in pairwise mode."""

import pytest
import torch

from rlxf.rewards.judge import LLMJudge, parse_score, parse_winner


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"reason": "fine", "score": 7}', 7.0),
        ('```json\n{"reason": "ok", "score": "8"}\n```', 8.0),
        ("{'score': 3, 'reason': 'meh'}", 3.0),
        ("I would give it Score: 9 because...", 9.0),
        ("Overall 6/10.", 6.0),
        ('{"score": 42}', None),  # outside the scale
        ("no number here", None),
        ('{"score": 11} but really score: 5', 5.0),  # the first in-range candidate
        ('{"score": true}', None),  # a JSON boolean is no rating
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply, 1, 10) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"reason": "x", "winner": "A"}', "A"),
        ('{"winner": "b"}', "B"),
        ('{"winner": "tie"}', "tie"),
        ("Winner: B", "B"),
        ("Response A is better because it is shorter.", "A"),
        ('{"winner": "C"}', None),
        ("hard to say", None),
    ],
)
def test_parse_winner(reply, expected):
    assert parse_winner(reply) == expected


class ScriptedEngine:
    """Replies from a function of the question; records what it was asked."""

    def __init__(self, reply):
        self.reply, self.asked = reply, []

    def generate(self, prompts, sampling):
        assert sampling.temperature == 0
        questions = [p[-1]["content"] for p in prompts]
        self.asked += questions
        return type("R", (), {"texts": [self.reply(q) for q in questions]})()


def test_pointwise_maps_the_scale_to_unit_interval_and_counts_unparsed():
    replies = {"good": '{"score": 10}', "bad": '{"score": 1}', "mid": "score: 4", "junk": "???"}
    engine = ScriptedEngine(lambda q: next(v for k, v in replies.items() if f"[Response]\n{k}" in q))
    judge = LLMJudge(engine=engine, rubric="Be strict.")
    prompts = [[{"role": "user", "content": "hi"}]] * 4
    batch = judge.score(prompts, ["good", "bad", "mid", "junk"])
    # (s - 1) / 9: 1.0, 0.0, 3/9; unparsed -> 0.5
    assert batch.rewards.tolist() == pytest.approx([1.0, 0.0, 1 / 3, 0.5])
    assert batch.by_source["judge_unparsed"].tolist() == [0, 0, 0, 1]
    assert all("Be strict." in q and "user: hi" in q for q in engine.asked)


def test_pairwise_asks_both_orders_and_averages():
    def reply(question):
        a = question.split("[Response A]\n")[1].split("\n")[0]
        b = question.split("[Response B]\n")[1].split("\n")[0]
        if "always-A" in (a, b):  # a position-biased judge: always says A
            return '{"winner": "A"}'
        return '{"winner": "%s"}' % ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")

    engine = ScriptedEngine(reply)
    judge = LLMJudge(engine=engine, mode="pairwise")
    prompts = [[{"role": "user", "content": "q"}]] * 4
    batch = judge.score(prompts, ["longer answer", "x", "same", "always-A"], reference=["ref", "ref", "abcd", "ref"])
    # longer than "ref" wins twice -> 1; shorter loses twice -> 0; same length ties -> 0.5;
    # position bias wins once and loses once -> 0.5, flagged inconsistent
    assert batch.rewards.tolist() == [1.0, 0.0, 0.5, 0.5]
    assert [d["position_consistent"] for d in batch.details] == [True, True, True, False]
    assert len(engine.asked) == 8


def test_pairwise_without_reference_is_a_clear_error():
    judge = LLMJudge(engine=ScriptedEngine(lambda q: "A"), mode="pairwise")
    with pytest.raises(ValueError, match="reference"):
        judge.score([[{"role": "user", "content": "q"}]], ["a"])


def test_judge_on_a_real_engine_runs(tmp_path):
    """The tiny random model replies with noise: every reply is unparsed and neutral, none lost."""
    judge = LLMJudge(model="tiny-llama", max_new_tokens=8)
    batch = judge.score([[{"role": "user", "content": "2+2?"}]] * 3, ["4", "5", "four"])
    assert batch.rewards.shape == (3,)
    assert torch.all((batch.rewards >= 0) & (batch.rewards <= 1))
    assert len(batch.details) == 3

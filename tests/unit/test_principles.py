"""RLBFF's principle-tagged judgements: what each layout gives, bad rows named, the reward's mean."""

import json
from types import SimpleNamespace

import pytest
import torch

from rlxf.data.errors import DataError
from rlxf.data.principles import QA_PRINCIPLES, principle_of, read_principle_judgements, with_principle
from rlxf.rewards.principles import PrincipleReward


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ratings_become_yes_no_and_a_middle_score_says_neither(tmp_path):
    path = write(
        tmp_path / "ratings.jsonl",
        [{"prompt": "q", "completion": "a", "scores": {"concise": 5, "polite": 3, "correct": 2}, "weight": 0.8}],
    )
    examples, _ = read_principle_judgements(path)
    assert [e.weight for e in examples] == [0.8, 0.8]  # the export's reliability weight reaches the loss
    assert [(principle_of(e.prompt), e.label) for e in examples] == [
        ("The response is concise.", 1.0),
        ("The response is correct.", 0.0),
    ]
    assert examples[0].prompt[0] == {"role": "user", "content": "q"}  # the question stays the first turn


def test_qa_feedback_gives_three_principles_from_its_error_marks(tmp_path):
    row = {
        "question": "When?",
        "passages": [["T", "S."]],
        "prediction 1": "In 2018, maybe.",
        "feedback": {"errors": [{"error type": "Unverifiable", "start": 0, "end": 3}], "missing-info": []},
    }
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([row]))
    examples, _ = read_principle_judgements(path)
    # an unverifiable fact breaks the factuality principle only
    assert [(principle_of(e.prompt), e.label) for e in examples] == [
        (QA_PRINCIPLES["relevance"], 1.0),
        (QA_PRINCIPLES["factuality"], 0.0),
        (QA_PRINCIPLES["completeness"], 1.0),
    ]


def test_rows_of_ones_own(tmp_path):
    path = write(
        tmp_path / "own.jsonl", [{"prompt": "q", "completion": "a", "principle": "Be brief.", "label": "true"}]
    )
    (example,), _ = read_principle_judgements(path)
    assert example.label == 1.0 and principle_of(example.prompt) == "Be brief."


@pytest.mark.parametrize(
    "row, field",
    [
        ({"prompt": "q", "completion": "a", "scores": {"concise": 7}}, "scores.concise"),
        ({"prompt": "q", "completion": "a", "scores": {"concise": True}}, "scores.concise"),
        ({"prompt": "q", "completion": "a", "scores": []}, "scores"),
        ({"prompt": "q", "completion": "a", "principle": "p", "label": 0.5}, "label"),
        ({"prompt": "q", "completion": "a", "label": 1}, "principle"),
    ],
)
def test_a_bad_row_is_named(tmp_path, row, field):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a", "principle": "p", "label": 1}, row])
    with pytest.raises(DataError, match=f"line 2, field '{field}'"):
        read_principle_judgements(path)


def test_the_reward_is_the_mean_probability_over_the_principles():
    source = PrincipleReward.__new__(PrincipleReward)
    source.name, source.principles, seen = "principle", ["A.", "B."], []

    def score(prompts, completions):
        seen.append([principle_of(p) for p in prompts])
        return SimpleNamespace(rewards=torch.tensor([0.9, 0.2]) if len(seen) == 1 else torch.tensor([0.5, 0.4]))

    source.classifier = SimpleNamespace(score=score)
    batch = source.score([[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]], ["x", "y"])
    assert batch.rewards.tolist() == pytest.approx([0.7, 0.3])
    assert seen == [["A.", "A."], ["B.", "B."]] and set(batch.by_source) == {"principle_1", "principle_2"}
    with pytest.raises(ValueError, match="give principles"):
        PrincipleReward("somewhere", [])


def test_with_principle_adds_a_turn():
    prompt = [{"role": "user", "content": "q"}]
    assert with_principle(prompt, "Be kind.") == [prompt[0], {"role": "user", "content": "Principle: Be kind."}]

"""Critique-then-refine pairs and the seq2seq reward model's data and token verdicts, with scripted models."""

import json

import pytest
import torch

from rlxf.config import ConfigError, load_config
from rlxf.data import read_demonstrations, read_preferences
from rlxf.models.tiny import tiny_tokenizer
from rlxf.recipes.language_feedback import (
    CorrectionDataConfig,
    RefineConfig,
    run_refine,
    write_correction_data,
)
from rlxf.rewards.seq2seq import CORRECTION_REQUEST, character_ends, token_verdicts


def test_token_verdicts_are_plus_one_where_the_model_would_write_the_same_token():
    predicted, target = torch.tensor([5, 6, 9, 7]), torch.tensor([5, 6, 7, 7])
    assert token_verdicts(predicted, target).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_character_ends_follow_the_tokens_and_stop_at_the_text():
    tokenizer = tiny_tokenizer()  # one token per byte
    ids = tokenizer("héllo", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # h | é (two bytes: the first decodes to a replacement character) | l | l | o | end of turn
    ends = character_ends(tokenizer, ids, len("héllo"))
    assert ends[0] == 1 and ends[-3:] == [4, 5, 5] and ends == sorted(ends)


class ScriptedEngine:
    def __init__(self, reply):
        self.reply, self.asked = reply, []

    def generate(self, prompts, sampling, seeds=None):
        self.asked.append((prompts, sampling.temperature))
        return type("R", (), {"texts": [self.reply(p) for p in prompts]})()


def policy_reply(chat):
    last = chat[-1]["content"]
    if last.startswith("Feedback on your answer:"):
        return "a better draft" if "too short" in last else chat[-2]["content"]  # keeps it without a useful critique
    return "first draft"


@pytest.fixture
def engines(monkeypatch):
    made = {"policy": ScriptedEngine(policy_reply), "critic": ScriptedEngine(lambda chat: "It is too short.")}
    monkeypatch.setattr(
        "rlxf.recipes.language_feedback.load_engine", lambda name, **_: made["critic" if name == "critic" else "policy"]
    )
    return made


def test_refine_writes_rewrite_over_original_pairs_and_critique_rows(tmp_path, engines):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(3)))
    results = run_refine(
        load_config(RefineConfig, None, [f"output_dir={tmp_path / 'out'}", f"prompts={prompts}", "critic=critic"])
    )
    assert results == {"items": 3, "pairs": 3, "unchanged": 0, "not_better": 0, "critiques": 3}
    pairs, _ = read_preferences(tmp_path / "out/pairs.jsonl")
    assert [(p.chosen, p.rejected) for p in pairs] == [("a better draft", "first draft")] * 3
    critiques, _ = read_demonstrations(tmp_path / "out/critiques.jsonl")
    assert (
        critiques[0].completion == "It is too short."
        and "[Response]\nfirst draft" in critiques[0].prompt[-1]["content"]
    )
    assert engines["critic"].asked[0][1] == 0.0  # critiques are greedy


def test_refine_reads_peoples_written_feedback_from_the_export(tmp_path, engines):
    export = tmp_path / "verbal.jsonl"
    rows = [
        {"prompt": "q1", "completions": ["first draft", "other"], "feedback": "too short, say more"},
        {"prompt": [{"role": "user", "content": "q2"}], "completions": ["first draft"], "feedback": "fine"},
    ]
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_refine(load_config(RefineConfig, None, [f"output_dir={tmp_path / 'out'}", f"critiques={export}"]))
    assert results == {
        "items": 2,
        "pairs": 1,
        "unchanged": 1,
        "not_better": 0,
        "critiques": 2,
    }  # "fine" changed nothing
    # a check that scores only answers beginning with "first" scores no rewrite above its original
    kept = run_refine(
        load_config(
            RefineConfig,
            None,
            [
                f"output_dir={tmp_path / 'kept'}",
                f"critiques={export}",
                "keep_if_better={kind: format, pattern: '^first'}",
            ],
        )
    )
    assert kept["pairs"] == 0 and kept["not_better"] == 1 and kept["unchanged"] == 1
    export.write_text(json.dumps({"prompt": "q", "completions": ["a"], "feedback": " "}) + "\n")
    with pytest.raises(ConfigError, match=f"{export}, line 1, field 'feedback'"):
        run_refine(load_config(RefineConfig, None, [f"output_dir={tmp_path / 'bad'}", f"critiques={export}"]))
    export.write_text(json.dumps({"prompt": [{"x": 1}], "completions": ["a"], "feedback": "more"}) + "\n")
    with pytest.raises(ConfigError, match="line 1, field 'prompt'"):
        run_refine(load_config(RefineConfig, None, [f"output_dir={tmp_path / 'bad'}", f"critiques={export}"]))
    with pytest.raises(ValueError, match="one of them"):
        load_config(RefineConfig, None, [f"critiques={export}", f"prompts={export}"])


def test_correction_data_maps_the_rejected_and_the_chosen_to_the_chosen(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(9)]
    rows.append({"prompt": "q tie", "chosen": "x", "rejected": "y", "tie": True})
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = write_correction_data(
        load_config(
            CorrectionDataConfig,
            None,
            [f"output_dir={tmp_path / 'out'}", f"data.path={pairs}", "data.eval_fraction=0.2"],
        )
    )
    examples, _ = read_demonstrations(tmp_path / "out/train.jsonl")
    held, _ = read_preferences(tmp_path / "out/held_out.jsonl")
    assert results["train_rows"] == len(examples) == 2 * (10 - len(held) - results["ties_left_out"])
    for correction, identity in zip(examples[0::2], examples[1::2]):
        asked = correction.prompt[-1]["content"]
        assert asked.endswith(CORRECTION_REQUEST) and "[Response]\nbad" in asked
        assert "[Response]\ngood" in identity.prompt[-1]["content"]
        assert correction.completion == identity.completion and correction.completion.startswith("good")

"""The Python API: docs/python.md's examples run as written, and bad arguments say what is wrong."""

import re
from pathlib import Path

import pytest

import rlxf
from rlxf.config import ConfigError

PAGE = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def test_the_python_page_examples_run(tmp_path, capsys):
    namespace = {"workdir": str(tmp_path)}
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own examples
    printed = capsys.readouterr().out
    assert "LlamaForCausalLM" in printed and "\n4\n" in printed and "True" in printed
    assert (tmp_path / "grpo" / "config.yaml").read_text().count("kind: python") == 2
    assert list((tmp_path / "sft" / "inputs").glob("model-*/config.json"))  # the object, saved by content


def test_bad_arguments_say_what_is_wrong(tmp_path):
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    with pytest.raises(ConfigError, match=r"did you mean train.lr\? \(TRL's learning_rate\)"):
        rlxf.dpo("tiny-llama", rows, output_dir=str(tmp_path), learning_rate=1e-5)
    with pytest.raises(ValueError, match="a model object needs its tokenizer"):
        rlxf.dpo(object.__new__(type("Model", (), {"save_pretrained": lambda self, path: None})), rows)
    with pytest.raises(TypeError, match="data must be a path, a datasets.Dataset"):
        rlxf.dpo("tiny-llama", 42, output_dir=str(tmp_path))
    with pytest.raises(AttributeError, match="no attribute 'dpoo'"):
        rlxf.dpoo  # noqa: B018


def test_an_online_run_holds_out_the_eval_dataset_it_is_given(tmp_path):
    rows = [{"prompt": f"Say {n}.", "answer": str(n)} for n in range(8)]
    held = [{"prompt": f"Repeat {n}.", "answer": str(n)} for n in range(3)]

    def said(completions, answer, **kwargs):
        return [float(a in c) for c, a in zip(completions, answer)]

    small = {"sampling": {"n": 2, "max_new_tokens": 4}, "train": {"max_steps": 1, "batch_size": 2}}
    result = rlxf.grpo("tiny-llama", rows, eval_dataset=held, rewards=[said], output_dir=str(tmp_path), **small)
    assert result.metrics["before"]["prompts"] == 3 and "eval_path" in (tmp_path / "config.yaml").read_text()
    assert [e["prompt"] for e in result.metrics["before"]["examples"]] == ["Repeat 0.", "Repeat 1.", "Repeat 2."]


def test_nash_learners_take_a_callable_oracle_and_presets_read_their_values_as_the_command_line_does(tmp_path):
    rows = [{"prompt": f"Say {n}."} for n in range(10)]

    def prefer_shorter(prompts, firsts, seconds):
        return [0.9 if len(a) < len(b) else 0.1 if len(a) > len(b) else 0.5 for a, b in zip(firsts, seconds)]

    small = {"max_new_tokens": 4, "train": {"max_steps": 1, "batch_size": 2}, "task": {"eval_count": 2}}
    result = rlxf.online_ipo("tiny-llama", rows, oracle=prefer_shorter, output_dir=str(tmp_path / "ipo"), **small)
    assert result.metrics["learner"] == "online_ipo" and result.config.oracle is prefer_shorter
    spo = rlxf.spo("tiny-llama", rows, rewards=[{"kind": "win_rate", "model": prefer_shorter}],
                   output_dir=str(tmp_path / "spo"), sampling={"n": 2, "max_new_tokens": 4},
                   train={"max_steps": 1, "batch_size": 2}, task={"eval_count": 2})  # fmt: skip
    assert spo.config.algo == "grpo" and spo.config.rewards[0].kind == "win_rate"

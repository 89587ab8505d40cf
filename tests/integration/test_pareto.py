"""`rlxf pareto` on a tiny model: two conflicting sources (a digit, and no digit), one policy per weighting."""

import json

from rlxf.cli import main

NO_DIGIT = """def no_digit(completions, **kwargs):
    return [float(not any(ch.isdigit() for ch in c)) for c in completions]
"""


def test_each_weighting_trains_toward_its_source_and_the_front_is_reported(tmp_path, prompt_file):
    (tmp_path / "rewards.py").write_text(NO_DIGIT)
    rewards = f"online.rewards=[{{kind: format, pattern: '[0-9]'}}, {{kind: python, function: '{tmp_path / 'rewards.py'}:no_digit'}}]"
    args = [
        "pareto",
        f"output_dir={tmp_path / 'sweep'}",
        "weights=[[1, 0], [0.5, 0.5], [0, 1]]",
        rewards,
        "online.policy.name=tiny-llama",
        "online.task.name=file",
        f"online.task.path={prompt_file}",
        "online.task.eval_count=8",
        "online.sampling.n=4",
        "online.sampling.max_new_tokens=16",
        "online.train.batch_size=4",
        "online.train.max_steps=5",
        "online.train.lr=1e-2",
        "online.train.scheduler=constant",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "sweep" / "pareto.json").read_text())
    assert summary["objectives"] == ["format", "no_digit"]
    digits, mixed, none = (run["held_out"] for run in summary["runs"])
    assert digits["format"] > none["format"] and none["no_digit"] > digits["no_digit"], summary
    assert all(abs(r["held_out"]["format"] + r["held_out"]["no_digit"] - 1) < 1e-9 for r in summary["runs"])
    assert summary["runs"][0]["on_front"] and summary["runs"][2]["on_front"]
    assert (tmp_path / "sweep" / "pareto.png").stat().st_size > 0
    assert "| [1.0, 0.0] |" in (tmp_path / "sweep" / "report.md").read_text()

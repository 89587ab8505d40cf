"""`rlxf reactions` (RLUF's P[positive reaction]) on a tiny model, and its use as a reward."""

import json

from rlxf.cli import main
from rlxf.train.metrics import read_metrics
from tests.integration.test_safety import online


def test_a_reaction_model_learns_what_users_liked_and_rewards_it_as_a_probability(tmp_path, prompt_file):
    rows = [
        {
            "prompt": f"question {i}",
            "completion": f"reply {i} " + ("thanks a lot" if i % 2 else "go away"),
            "label": i % 2,
        }
        for i in range(48)
    ]  # the feedback app's labeled.jsonl layout: love/like 1, dislike 0
    data = tmp_path / "labeled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["reactions", f"output_dir={tmp_path / 'rm'}", "model.name=tiny-llama", f"data.path={data}"]
    assert main([*args, "data.eval_fraction=0.25", "train.max_steps=40", "train.batch_size=8", "train.lr=3e-3"]) == 0
    trained = read_metrics(tmp_path / "rm" / "metrics.jsonl", "train")
    assert sum(r["loss"] for r in trained[-5:]) < 0.5 * sum(r["loss"] for r in trained[:5])
    held = json.loads((tmp_path / "rm" / "eval.json").read_text())["held_out"]
    assert held["accuracy"] > 0.8 and held["auroc"] > 0.8 and 0 <= held["ece"] <= 1 and held["responses"] > 4
    model = tmp_path / "rm" / "model"
    _, run = online(
        tmp_path / "policy", prompt_file, "train.max_steps=1", f"rewards=[{{kind: reaction_model, model: '{model}'}}]"
    )
    assert 0 < run[-1]["reward/reaction_model"] < 1

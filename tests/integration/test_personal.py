"""`rlxf vpl` from the command line on a tiny embedder: synthetic users who disagree, and the users
named by a file's annotator column."""

import json

import pytest

from rlxf.cli import main
from rlxf.config import ConfigError


def test_vpl_learns_synthetic_users_and_saves_its_model(tmp_path, small_hh):
    out = tmp_path / "vpl"
    args = ["vpl", f"output_dir={out}", f"data.path={small_hh}", "synthetic_users=20", "pairs_per_user=8"]
    assert main([*args, "embedder=tiny-llama", "train.max_steps=20"]) == 0
    held = json.loads((out / "eval.json").read_text())["held_out"]
    assert {"vpl_accuracy", "shared_accuracy", "vpl_no_context_accuracy", "vpl_accuracy/longer"} <= set(held)
    assert held["pairs"] % 4 == 0  # each held-out user predicts its pairs past the 4 of its context
    assert json.loads((out / "model" / "settings.json").read_text())["kind"] == "personal_model"
    assert (out / "model" / "vpl.pt").exists() and (out / "report.md").exists()


def test_the_users_are_the_files_annotators(tmp_path):
    rows = [
        {"prompt": f"q{i}", "chosen": f"a{i}" * (1 + i % 3), "rejected": f"b{i}", "annotator": f"ann{i % 10}"}
        for i in range(120)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "vpl"
    assert main(["vpl", f"output_dir={out}", f"data.path={path}", "embedder=tiny-llama", "train.max_steps=5"]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert sum(results["users"].values()) == 10
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "annotator"}) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="120 pairs have no annotator"):
        from rlxf.config import load_config
        from rlxf.recipes.personal_rm import PersonalRMConfig, train_personal_rm

        train_personal_rm(load_config(PersonalRMConfig, None, [f"output_dir={tmp_path / 'x'}", f"data.path={path}"]))

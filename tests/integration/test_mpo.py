"""`rlxf mpo` on a tiny model: the pairs split by the reward model's margin, DPO on the easy ones, online
RL on the hard ones' prompts from the DPO model."""

import json

import yaml

from rlxf.cli import main
from rlxf.data import read_preferences
from rlxf.rewards.learned import LearnedReward


def test_mpo_splits_by_margin_then_runs_dpo_and_online_rl_from_the_dpo_model(tmp_path, small_hh):
    rm = ["rm", f"output_dir={tmp_path / 'rm'}", "model.name=tiny-llama", f"data.path={small_hh}"]
    assert main([*rm, "train.max_steps=2", "train.batch_size=4", "data.max_length=160"]) == 0
    reward_model = tmp_path / "rm" / "model"
    args = [
        "mpo",
        f"output_dir={tmp_path / 'mpo'}",
        f"data.path={small_hh}",
        f"reward_model={reward_model}",
        "easy_fraction=0.25",
        "dpo.policy.name=tiny-llama",
        "dpo.data.max_length=160",
        "dpo.data.max_prompt_length=96",
        "dpo.train.max_steps=2",
        "dpo.train.batch_size=2",
        "online.task.eval_count=4",
        "online.sampling.n=2",
        "online.sampling.max_new_tokens=8",
        "online.train.max_steps=2",
        "online.train.batch_size=2",
    ]
    assert main(args) == 0
    split = json.loads((tmp_path / "mpo" / "split" / "margins.json").read_text())
    assert (
        split["easy"] == 10
        and split["hard"] == 30
        and split["easy_mean_margin"] >= split["margin_cut"] >= split["hard_mean_margin"]
    )
    # the easy pairs are those the reward model is surest of
    easy, _ = read_preferences(tmp_path / "mpo" / "split" / "easy.jsonl")
    judge = LearnedReward(str(reward_model))
    margins = (judge.score([r.prompt for r in easy], [r.chosen for r in easy]).rewards
               - judge.score([r.prompt for r in easy], [r.rejected for r in easy]).rewards)  # fmt: skip
    assert float(margins.min()) >= split["margin_cut"] - 1e-5
    dpo = yaml.safe_load((tmp_path / "mpo" / "dpo" / "config.yaml").read_text())
    assert dpo["data"]["path"].endswith("easy.jsonl")
    online = yaml.safe_load((tmp_path / "mpo" / "online" / "config.yaml").read_text())
    assert online["policy"]["name"] == str(tmp_path / "mpo" / "dpo" / "model") and online["reference"]["name"] == ""
    assert online["task"]["path"].endswith("hard_prompts.jsonl") and online["algo"] == "ppo"
    assert online["rewards"][0]["kind"] == "reward_model" and online["rewards"][0]["model"] == str(reward_model)
    assert (tmp_path / "mpo" / "online" / "model" / "model.safetensors").exists()
    assert main(args) == 0  # run again: the split is read back and both stages are already trained

"""A principle-conditioned reward model from the command line on a tiny model, used as a reward with
principles chosen when the run is configured."""

import json

import pytest

from rlxf.cli import main


def test_a_principle_model_trains_and_rewards_the_principles_it_is_given(tmp_path, small_qa):
    data, prompts = small_qa
    model = tmp_path / "principles"
    tiny = ["model.name=tiny-llama", f"data.path={data}", "data.max_length=192", "data.max_prompt_length=96"]
    assert main(["principles", f"output_dir={model}", "passages=1", "train.max_steps=2", *tiny]) == 0
    held = json.loads((model / "eval.json").read_text())["held_out"]
    assert (
        len(held["per_principle"]) == 3
        and held["responses"] == 3 * held["per_principle"][next(iter(held["per_principle"]))]["responses"]
    )
    rewards = f'rewards=[{{kind: principle, model: {model / "model"}, principles: ["The response is short.", "It is polite."]}}]'
    run = tmp_path / "grpo"
    online = ["grpo", f"output_dir={run}", "policy.name=tiny-llama", "task.name=file", f"task.path={prompts}"]
    online += ["task.eval_count=4", rewards, "sampling.n=2", "sampling.max_new_tokens=16", "train.batch_size=2"]
    assert main([*online, "train.max_steps=1"]) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    assert 0 < row["reward"] < 1 and {"reward/principle_1", "reward/principle_2"} <= set(row)
    assert row["reward"] == pytest.approx((row["reward/principle_1"] + row["reward/principle_2"]) / 2, abs=1e-6)

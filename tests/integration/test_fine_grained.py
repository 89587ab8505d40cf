"""Fine-grained reward models from the command line on a tiny model: trained on the qa-feedback data,
saved as fine_grained sources, and used by an online run as dense per-segment rewards."""

import json

import pytest

from rlxf.cli import main
from rlxf.config import load_config
from rlxf.recipes.online_config import OnlineConfig


def test_fine_grained_models_train_and_reward_each_segment(tmp_path, small_qa):
    data, prompts = small_qa
    tiny = ["model.name=tiny-llama", f"data.path={data}", "data.max_length=1024", "data.max_prompt_length=48"]
    tiny += ["context_chars=200"]
    for kind in ("relevance", "completeness"):
        out = tmp_path / kind
        assert main(["fgrm", f"output_dir={out}", f"kind={kind}", "passages=1", "train.max_steps=2", *tiny]) == 0
        held = json.loads((out / "eval.json").read_text())["held_out"]
        assert {"accuracy", "error_f1", "no_error_f1", "all_error_accuracy"} <= set(held)
        assert held["all_error_accuracy"] + held["all_no_error_accuracy"] == pytest.approx(1)
        settings = json.loads((out / "model" / "rlxf.json").read_text())
        assert settings["kind"] == "fine_grained" and settings["error_kind"] == kind
    rewards = (
        f"rewards=[{{kind: fine_grained, model: {tmp_path / 'relevance' / 'model'}, weight: 0.3}}, "
        f"{{kind: fine_grained, model: {tmp_path / 'completeness' / 'model'}, weight: 0.3}}]"
    )
    run = tmp_path / "rpp"
    online = ["reinforce_pp", f"output_dir={run}", "policy.name=tiny-llama", "task.name=file", f"task.path={prompts}"]
    online += ["task.eval_count=4", rewards, "sampling.n=2", "sampling.max_new_tokens=24", "train.batch_size=2"]
    assert main([*online, "train.max_steps=2"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split", "train") == "train"]
    assert len(train) == 2 and {"reward/relevance", "reward/completeness"} <= set(train[-1])
    # each source gives ±1 per segment (before its weight); completeness has one segment per response
    assert all(abs(r["reward/completeness"]) <= 1 for r in train)


def test_dense_rewards_are_refused_where_nothing_reads_them(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "rlxf.json").write_text('{"kind": "fine_grained", "level": "sentence", "error_kind": "relevance"}')
    base = [f"output_dir={tmp_path / 'run'}", "task.name=arithmetic"]
    source = f"{{kind: fine_grained, model: {model}}}"
    with pytest.raises(ValueError, match="dense_rewards"):
        load_config(OnlineConfig, None, [*base, f"rewards=[{source}]", "algo=grpo", "dense_rewards=false"])
    assert load_config(OnlineConfig, None, [*base, f"rewards=[{source}]", "algo=ppo", "dense_rewards=false"])
    with pytest.raises(ValueError, match="normalize"):
        load_config(OnlineConfig, None, [*base, f"rewards=[{{kind: fine_grained, model: {model}, normalize: true}}]"])
    with pytest.raises(ValueError, match="no such folder"):
        load_config(OnlineConfig, None, [*base, "rewards=[{kind: fine_grained, model: nowhere}]"])

"""Safe RLHF end to end on a tiny model: the Lagrangian keeps the cost under its limit where the
unconstrained run does not, PPO-Lag trains two critics, λ resumes, and `rlxf cm` trains a cost
model that a constrained run reads."""

import json
import shutil

import pytest

from rlxf.config import load_config
from rlxf.data import DataError, read_preferences
from rlxf.recipes.reward_model import CostModelConfig, train_cost_model
from rlxf.train.metrics import read_metrics
from tests.integration.test_online import online  # the same tiny run: a digit in the completion is rewarded

# the reward: a digit in the completion; the cost: a digit from 0 to 4 in it. Writing only 5-9 earns
# the reward at no cost, but an unconstrained policy writes digits of every kind.
COST = 'safety.costs=[{kind: format, pattern: "[0-4]"}]'


def last(rows, key, steps=3):
    return sum(r[key] for r in rows[-steps:]) / steps


def test_the_lagrangian_keeps_the_cost_under_its_limit_where_the_unconstrained_run_does_not(tmp_path, prompt_file):
    # the control: the same run with λ held at 10⁻⁶ (the cost is scored and logged, and ignored)
    _, free = online(
        tmp_path / "free",
        prompt_file,
        "train.max_steps=12",
        COST,
        "safety.multiplier_init=1e-6",
        "safety.multiplier_lr=0",
    )
    results, safe = online(tmp_path / "safe", prompt_file, "train.max_steps=12", COST, "safety.cost_limit=0.2")
    assert last(free, "reward") > 0.9 and last(safe, "reward") > 0.9, (
        [r["reward"] for r in free],
        [r["reward"] for r in safe],
    )
    assert last(free, "cost") > 0.5, [r["cost"] for r in free]
    assert last(safe, "cost") <= 0.2 and safe[-1]["cost_window_mean"] <= 0.2, [r["cost"] for r in safe]
    assert results["after"]["greedy_cost"] <= 0.2 and "greedy_cost_interval" in results["after"]
    report = (tmp_path / "safe" / "report.md").read_text()
    assert "The cost constraint held" in report and "report/multiplier.png" in report and "report/cost.png" in report


def test_ppo_lagrangian_trains_a_reward_critic_and_a_cost_critic(tmp_path, prompt_file):
    _, rows = online(
        tmp_path, prompt_file, "train.max_steps=2", "algo=ppo", "kl_coef=0.05", COST, "safety.cost_limit=0"
    )
    assert rows[-1]["value_loss"] > 0 and rows[-1]["cost_value_loss"] > 0 and "cost_value_clipped" in rows[-1]
    assert rows[-1]["multiplier"] > 1  # every cost is >= 0 = the limit, and some are 1: λ rose


def test_the_multiplier_and_its_window_resume_where_they_were(tmp_path, prompt_file):
    knobs = ("train.max_steps=4", "train.save_every=2", COST, "safety.cost_limit=0", "safety.multiplier_lr=0.5")
    _, straight = online(tmp_path / "straight", prompt_file, *knobs)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "checkpoint-4")
    _, resumed = online(tmp_path / "resumed", prompt_file, *knobs)
    for before, after in zip(straight[2:], resumed[2:]):
        for key in ("multiplier", "cost_window_mean", "cost"):
            assert after[key] == pytest.approx(before[key], rel=1e-9), key
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-5, abs=1e-7)


def labeled_pairs(tmp_path, small_hh):
    """The HH pairs with each response labeled: chosen harmless, rejected harmful (for the test)."""
    rows = [json.loads(line) for line in small_hh.read_text().splitlines()]
    path = tmp_path / "labeled_pairs.jsonl"
    path.write_text("".join(json.dumps({**r, "chosen_safe": True, "rejected_safe": False}) + "\n" for r in rows))
    return path


def test_a_cost_model_learns_to_put_harmful_responses_above_zero_and_a_constrained_run_reads_it(
    tmp_path, small_hh, prompt_file
):
    config = load_config(
        CostModelConfig,
        None,
        [
            f"output_dir={tmp_path / 'cm'}",
            "model.name=tiny-llama",
            f"data.path={labeled_pairs(tmp_path, small_hh)}",
            "data.max_length=160",
            "data.max_prompt_length=96",
            "data.limit=8",  # a handful of pairs seen many times: learning shows within seconds
            "train.max_steps=30",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.scheduler=constant",
        ],
    )
    results = train_cost_model(config)
    rows = read_metrics(tmp_path / "cm" / "metrics.jsonl", "train")
    assert sum(r["loss"] for r in rows[-5:]) < 0.5 * sum(r["loss"] for r in rows[:5])
    assert sum(r["costs/costlier_sign_accuracy"] for r in rows[-5:]) / 5 > 0.8
    assert results["held_out"]["pairs"] > 0
    saved = json.loads((tmp_path / "cm" / "model" / "rlxf.json").read_text())
    assert saved["kind"] == "cost_model"
    cost_model = tmp_path / "cm" / "model"
    _, constrained = online(
        tmp_path / "run",
        prompt_file,
        "train.max_steps=1",
        f"safety.costs=[{{kind: cost_model, model: '{cost_model}'}}]",
    )
    assert "cost/cost_model" in constrained[-1] and "multiplier" in constrained[-1]
    with pytest.raises(ValueError, match="is a cost model: use it as {kind: cost_model} in safety.costs"):
        online(
            tmp_path / "wrong",
            prompt_file,
            "train.max_steps=1",
            f"rewards=[{{kind: reward_model, model: '{cost_model}'}}]",
        )


def test_a_cost_model_reads_a_labels_file_and_reports_its_held_out_sign_accuracy(tmp_path, small_hh):
    rows = [json.loads(line) for line in small_hh.read_text().splitlines()]
    labels = tmp_path / "labels.jsonl"  # the feedback app's labeled.jsonl layout: label 1 harmless, 0 harmful
    labels.write_text(
        "".join(
            json.dumps({"prompt": f"question {i}", "completion": f"answer {i}", "label": i % 2}) + "\n"
            for i in range(60)
        )
    )
    config = load_config(
        CostModelConfig,
        None,
        [
            f"output_dir={tmp_path / 'cm'}",
            "model.name=tiny-llama",
            f"data.path={small_hh}",
            f"labels_path={labels}",
            "data.max_length=160",
            "data.max_prompt_length=96",
            "train.max_steps=4",
            "train.batch_size=8",
        ],
    )
    results = train_cost_model(config)
    assert results["held_out"]["labeled_responses"] > 0 and 0 <= results["held_out"]["sign_accuracy"] <= 1
    trained = read_metrics(tmp_path / "cm" / "metrics.jsonl", "train")
    assert all("costs/sign_accuracy" in r for r in trained)
    assert len(rows) == 40


def test_contradictory_safety_labels_name_the_row(tmp_path):
    path = tmp_path / "pairs.jsonl"
    row = {"prompt": "q", "chosen": "a", "rejected": "b", "chosen_safe": False, "rejected_safe": True}
    path.write_text(json.dumps({**row, "chosen_safe": True}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"line 2.*chosen_safe.*chosen must be the safer one"):
        read_preferences(path)


def test_hc_rlhf_refuses_a_model_built_to_fail_its_safety_test(tmp_path, prompt_file):
    """Two steps with λ held still: about half the samples still cost 1, far above the limit 0.05, so
    the upper bound on the mean cost cannot pass; the model is not returned as model/."""
    from rlxf.api import recipe_functions

    trained = recipe_functions()["grpo"](
        "tiny-llama",
        str(prompt_file),
        output_dir=str(tmp_path),
        rewards=[{"kind": "format", "pattern": "\\d"}],
        safety={"costs": [{"kind": "format", "pattern": "\\d"}], "cost_limit": 0.05, "confidence_delta": 0.1,
                "multiplier_lr": 0},
        task={"eval_count": 8},
        sampling={"n": 8, "max_new_tokens": 16},
        train={"max_steps": 2, "batch_size": 4},
    )  # fmt: skip
    test = json.loads((tmp_path / "eval.json").read_text())["safety_test"]
    assert test["passed"] is False and test["ucb"] > 0.05 and test["n"] == 8
    assert trained.model is None and not (tmp_path / "model").exists() and (tmp_path / "unsafe_candidate").is_dir()
    assert "**No safe solution found**" in (tmp_path / "report.md").read_text()
    assert "No safe solution found" in (tmp_path / "unsafe_candidate" / "README.md").read_text()

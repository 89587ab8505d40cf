"""Online RL on a tiny model: the reward rises, and every algorithm and knob runs end to end."""

import json
import math

import pytest
import torch

from rlxf.config import load_config
from rlxf.recipes.online import OnlineConfig, merge_rollouts, train_online, zero_variance_groups
from rlxf.rewards import RewardBatch
from rlxf.rollout import Rollout
from rlxf.train.metrics import read_metrics


def online(tmp_path, prompt_file, *overrides):
    config = load_config(
        OnlineConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "policy.name=tiny-llama",
            "task.name=file",
            f"task.path={prompt_file}",
            "task.eval_count=8",
            'rewards=[{kind: format, pattern: "\\\\d"}]',
            "sampling.n=8",
            "sampling.max_new_tokens=16",
            "train.batch_size=4",
            "train.lr=1e-2",
            "train.scheduler=constant",
            *overrides,
        ],
    )
    return train_online(config), read_metrics(tmp_path / "metrics.jsonl", "train")


@pytest.mark.parametrize(
    "algo, extra",
    [
        ("grpo", ""),
        ("rloo", ""),
        ("reinforce_pp", ""),
        ("rft", "rft_top_k=8 train.max_steps=20"),
        ("nft", ""),
        ("sppo", ""),
    ],
)
def test_the_reward_of_an_easy_verifiable_task_rises(tmp_path, prompt_file, algo, extra):
    # reward 1 when the completion contains a digit: about half the random samples do at first
    results, rows = online(tmp_path, prompt_file, "train.max_steps=12", f"algo={algo}", *extra.split())
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert first < 0.75 and last > 0.9, [r["reward"] for r in rows]
    # rft only imitates its sampled successes, which need not move the greedy answer of a random model
    before, after = results["before"]["greedy_reward"], results["after"]["greedy_reward"]
    assert after >= before if algo == "rft" else after > before
    for key in (
        "reward/format",
        "zero_variance_groups",
        "response_length",
        "generate_tokens_per_second",
        "tokens_per_second",
        {"rft": "keep", "nft": "success", "sppo": "sppo_loss"}.get(algo, "clip_fraction"),
    ):
        assert key in rows[-1], key
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo=rloo", "kl_coef=0.05", "kl_penalty=reward", "kl_estimator=k1"],
        ["algo=remax", "sampling.n=2"],
        ["algo=reinforce_pp", "kl_coef=0.05", "kl_penalty=reward", "kl_target=1.0"],
        ["algo=dr_grpo", "aggregation=constant", "kl_coef=0.1", "kl_penalty=loss", "entropy_coef=0.01"],
        ["algo=grpo", "dynamic_sampling=true", "reference_refresh_every=1", "kl_coef=0.01"],
        ["algo=grpo", "policy.lora.rank=4", "kl_coef=0.05", "train.micro_batch_size=2"],
        ["algo=ppo", "kl_coef=0.05", "kl_penalty=reward", "train.micro_batch_size=2"],
        ["algo=ppo", "macro_actions=punctuation", "kl_coef=0.05"],
        ["algo=grpo", "updates_per_rollout=3", "clip_high=0.28"],
        ["algo=rft", "kl_coef=0.05", "rft_top_k=2"],
        ["algo=nft", "updates_per_rollout=2"],
        ["rewards=[{kind: judge, model: tiny-llama}, {kind: length, free_chars: 5, weight: 0.1}]"],
        [
            'rewards=[{kind: heron, factors: [{kind: format, pattern: "[0-9]"}, {kind: length, free_chars: 5}], margins: [0, 0.5]}]'
        ],
    ],
)
def test_every_algorithm_and_knob_runs(tmp_path, prompt_file, overrides):
    results, rows = online(tmp_path, prompt_file, "train.max_steps=2", *overrides)
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if any(o.startswith("kl_coef") for o in overrides):
        assert "kl" in rows[-1] and math.isfinite(rows[-1]["kl"]) and rows[-1]["kl_coef"] > 0
    if "entropy_coef=0.01" in overrides:
        assert rows[-1]["entropy"] > 0
    if "algo=ppo" in overrides:
        assert rows[-1]["value_loss"] > 0 and "value_clipped" in rows[-1]
    if "updates_per_rollout=3" in overrides:  # later updates move the ratio off 1: clipping bites
        assert rows[-1]["clip_fraction"] > 0
    if "algo=rft" in overrides:
        assert 0 < rows[-1]["keep"] <= 2 / 8
    if "algo=nft" in overrides:
        assert "success" in rows[-1] and "negative_floored" in rows[-1]
    if any("heron" in o for o in overrides):
        assert 0 <= rows[-1]["reward/heron"] <= 1 and "reward/heron/length" in rows[-1]
    if any("judge" in o for o in overrides):
        assert rows[-1]["reward/judge_unparsed"] >= 0 and "reward/length" in rows[-1]
    assert results["steps"] == 2


def test_dynamic_sampling_keeps_groups_with_signal():
    def part(rewards, tag):
        b = len(rewards)
        rollout = Rollout(
            [[1]] * b,
            [[tag, 2]] * b,
            torch.zeros(b, 2),
            torch.ones(b, 2),
            [str(tag)] * b,
            ["eos"] * b,
            [i // 2 for i in range(b)],
            {"generate_seconds": 1.0},
        )
        batch = RewardBatch(torch.tensor(rewards), {"r": torch.tensor(rewards)}, [{}] * b)
        return [f"p{tag}a", f"p{tag}b"], rollout, batch

    first = part([1.0, 1.0, 0.0, 1.0], 5)  # group a has no variance, group b has
    second = part([0.0, 1.0, 0.0, 0.0], 6)  # group a has variance
    prompts, rollout, rewards, filled = merge_rollouts([first, second], keep_groups=2, group_size=2)
    assert prompts == ["p5b", "p6a"] and rewards.rewards.tolist() == [0.0, 1.0, 0.0, 1.0] and filled == 0
    assert rollout.prompt_index == [0, 0, 1, 1] and rollout.completion_ids[0] == [5, 2]
    assert zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]
    # too few groups with signal: the batch keeps its size, filled with flat groups (first rollout first)
    flat = part([0.0, 0.0, 0.0, 0.0], 7)
    prompts, rollout, rewards, filled = merge_rollouts([first, flat], keep_groups=2, group_size=2)
    assert prompts == ["p5b", "p5a"] and filled == 1 and len(rollout.completion_ids) == 4


def test_the_adaptive_kl_coefficient_resumes_where_it_was(tmp_path, prompt_file):
    """Ziegler et al.'s controller moves kl_coef every step; a run resumed from the step-2
    checkpoint goes on from the coefficient it had reached, not from the configured one."""
    import shutil

    knobs = ("train.max_steps=4", "train.save_every=2", "kl_coef=0.5", "kl_penalty=reward", "algo=rloo")
    adaptive = (*knobs, "kl_target=0.001", "kl_horizon=64")  # K = 32 sequences / 64: up to 10% a step
    _, straight = online(tmp_path / "straight", prompt_file, *adaptive)
    assert straight[2]["kl_coef"] != pytest.approx(0.5, rel=1e-3)  # it did move by step 3
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "checkpoint-4")
    _, resumed = online(tmp_path / "resumed", prompt_file, *adaptive)
    for before, after in zip(straight[2:], resumed[2:]):
        assert after["kl_coef"] == pytest.approx(before["kl_coef"], rel=1e-9)
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-5, abs=1e-7)


def test_a_trl_style_reward_function_with_a_column_of_the_prompt_file_drives_a_run(tmp_path):
    """TRL's reward_funcs convention unchanged: the function reads the file's extra column and the
    reward of its digit rises."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"write something {i}", "wanted": "digit"}) + "\n" for i in range(40))
    )
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def wants(completions, wanted, completion_ids, **kwargs):\n"
        "    assert set(wanted) == {'digit'} and len(completion_ids) == len(completions)\n"
        "    assert all(isinstance(i, int) for ids in completion_ids for i in ids)\n"
        "    return [float(any(ch.isdigit() for ch in c)) for c in completions]\n"
    )
    out = tmp_path / "run"
    _, rows = online(out, prompts, "train.max_steps=12", f"rewards=[{{kind: python, function: '{rewards}:wants'}}]")
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert "reward/wants" in rows[-1] and first < 0.75 and last > 0.9, [r["reward"] for r in rows]


def test_spo_rewards_each_sample_by_its_wins_and_the_policy_moves_toward_what_the_oracle_prefers(tmp_path, prompt_file):
    oracle = tmp_path / "prefer_digits.py"
    oracle.write_text(
        "def digits(prompts, firsts, seconds):\n"
        "    has = lambda text: any(ch.isdigit() for ch in text)\n"
        "    return [0.5 + 0.5 * (has(a) - has(b)) for a, b in zip(firsts, seconds)]\n"
    )
    # a format reward of weight 0 trains nothing and logs the share of samples with a digit
    rewards = f"rewards=[{{kind: win_rate, model: '{oracle}:digits'}}, {{kind: format, pattern: '[0-9]', weight: 0.0}}]"
    _, rows = online(tmp_path / "run", prompt_file, "train.max_steps=12", rewards)
    assert all(r["reward/win_rate"] == pytest.approx(0.5) for r in rows)  # win proportions average ½ in every group
    first, last = (sum(r["reward/format"] for r in part) / 3 for part in (rows[:3], rows[-3:]))
    assert first < 0.75 and last > 0.9, [r["reward/format"] for r in rows]

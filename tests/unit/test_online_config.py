"""What each online algorithm means by default, and settings that would change nothing refused."""

import pytest

from rlxf.config import ConfigError, load_config
from rlxf.recipes.online_config import ALGORITHMS, OnlineConfig


def config(*overrides: str) -> OnlineConfig:
    return load_config(OnlineConfig, None, ["policy.name=tiny-llama", *overrides])


@pytest.mark.parametrize(
    "algo, kl_in_reward, kl_kind, aggregation",
    [
        ("grpo", False, "k3", "sequence_mean"),  # DeepSeekMath Eq. 3-4
        ("dr_grpo", False, "k3", "constant"),  # Dr. GRPO: Σ_t / generation budget
        ("rloo", True, "k1", "token_mean"),
        ("remax", True, "k1", "token_mean"),
        ("reinforce_pp", True, "k1", "token_mean"),  # r_t = 1[last]·r − β·KL_t
        ("ppo", True, "k1", "token_mean"),  # InstructGPT: r − β log π/π_ref
        ("rft", False, "k3", "token_mean"),
        ("nft", False, "k3", "token_mean"),
    ],
)
def test_each_algorithm_defaults_to_its_papers_kl_placement_and_aggregation(algo, kl_in_reward, kl_kind, aggregation):
    chosen = config(f"algo={algo}", "kl_coef=0.05")
    assert (chosen.kl_in_reward, chosen.kl_kind, chosen.loss_aggregation) == (kl_in_reward, kl_kind, aggregation)
    # and every default can be set on its own
    turned = config(f"algo={algo}", "kl_coef=0.05", "kl_estimator=k2", "aggregation=token_mean")
    assert (turned.kl_kind, turned.loss_aggregation) == ("k2", "token_mean")


def test_every_algorithm_names_an_estimator_and_a_loss_that_fit():
    for name, algorithm in ALGORITHMS.items():
        chosen = config(f"algo={name}")
        assert set(chosen.loss_fn.inputs) <= set(chosen.estimator.produces), name
        assert algorithm.source


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["kl_penalty=reward"], "kl_penalty"),  # no KL term at all
        (["kl_estimator=k1"], "kl_estimator"),
        (["kl_target=6"], "kl_target"),  # the adaptive controller would multiply 0
        (["reference.name=tiny-llama"], "reference.name"),
        (["reference_refresh_every=5"], "reference_refresh_every"),
        (["kl_coef=0.1", "kl_horizon=500"], "kl_horizon"),  # no kl_target to adapt toward
        (["algo=grpo", "lam=0.9"], "lam"),  # no critic
        (["algo=grpo", "value_coef=1.0"], "value_coef"),
        (["algo=grpo", "gamma=0.9"], "gamma"),  # no returns
        (["algo=grpo", "rft_top_k=2"], "rft_top_k"),
        (["algo=rft", "clip_high=0.28"], "clip_high"),  # fine-tuning has no ratio to clip
        (["clip_high=0.28"], "clip_high"),  # one on-policy pass: the ratio is exactly 1
        (["max_sampling_rounds=5"], "max_sampling_rounds"),
        (["distributed.weight_sync=broadcast"], "weight_sync"),  # no rollout workers
        (["task.eval_count=0", "eval_greedy_every=5"], "eval_greedy_every"),
        (["sampling.vllm_lora=adapters"], "sampling.vllm_lora"),
    ],
)
def test_a_setting_that_changes_nothing_is_an_error_naming_it(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config(*overrides)


def test_settings_that_take_effect_are_accepted():
    config("algo=ppo", "kl_coef=0.05", "lam=0.9", "gamma=0.99", "critic=tiny-llama")
    config("algo=reinforce_pp", "kl_coef=0.05", "gamma=0.99", "kl_target=1.0", "kl_horizon=500")
    config("algo=rft", "rft_top_k=2", "success_threshold=0.7", "kl_coef=0.05")
    config("dynamic_sampling=true", "max_sampling_rounds=5")
    config("clip_high=0.28", "updates_per_rollout=2")


def test_a_saved_config_naming_what_auto_takes_still_loads():
    """Configs saved before auto existed hold the values it resolves to, e.g. GRPO's KL placement."""
    assert config("algo=grpo", "kl_penalty=loss", "kl_estimator=k3").kl_kind == "k3"
    with pytest.raises(ConfigError, match="kl_penalty"):
        config("algo=grpo", "kl_penalty=reward")


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampling.temperature=0", "temperature must be > 0"),
        ("sampling.top_p=0", "top_p"),
        ("sampling.max_new_tokens=0", "max_new_tokens"),
        ("sampling.n=0", "sampling.n"),
        ("clip_low=1.5", "clip_low"),
        ("gamma=1.5", "gamma"),
        ("rft_top_k=0", "rft_top_k"),
        ("kl_coef=nan", "kl_coef"),
        ("rewards=[]", "rewards is empty"),
    ],
)
def test_values_outside_their_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        config(override)


def test_supervised_algorithms_refuse_kl_in_the_reward():
    """rft and nft learn from labels, not from the reward's value: KL there would do nothing."""
    with pytest.raises(ConfigError, match="kl_penalty=loss"):
        config("algo=nft", "kl_coef=0.05", "kl_penalty=reward")


def test_a_loss_that_reads_what_the_estimator_does_not_give_is_refused():
    with pytest.raises(ConfigError, match="success"):
        config("algo=grpo", "policy_loss=nft")
    # NFT's labels mark which groups train, not which samples to imitate: no fine-tuning on them
    with pytest.raises(ConfigError, match="keep"):
        config("algo=nft", "policy_loss=filtered_sft")
    # nft's loss on nft's labels, chosen piece by piece, is the nft algorithm
    assert config("algo=grpo", "advantage=success_rate", "policy_loss=nft").loss_fn.__name__ == "nft"


def test_group_estimators_need_several_samples_per_prompt():
    with pytest.raises(ConfigError, match=r"sampling\.n >= 2"):
        config("algo=rloo", "sampling.n=1")
    config("algo=reinforce_pp", "sampling.n=1")
    with pytest.raises(ConfigError, match=r"sampling\.n >= 2"):
        config("algo=reinforce_pp", "sampling.n=1", "dynamic_sampling=true")


def test_a_reward_option_its_kind_does_not_use_is_an_error():
    with pytest.raises(ConfigError, match="pattern"):
        config("rewards=[{kind: math, pattern: x}]")
    with pytest.raises(ConfigError, match="unknown_kind"):
        config("rewards=[{kind: unknown_kind}]")
    with pytest.raises(ConfigError, match="pattern"):  # a format reward needs its pattern
        config("rewards=[{kind: format}]")
    with pytest.raises(ConfigError, match="not a regular expression"):
        config("rewards=[{kind: format, pattern: '(a'}]")
    with pytest.raises(ConfigError, match="model"):
        config("rewards=[{kind: reward_model}]")
    assert config("rewards=[{kind: format, pattern: '\\d'}]").rewards[0].options() == {"pattern": "\\d"}

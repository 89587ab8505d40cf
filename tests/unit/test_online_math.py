"""Advantages and policy/value losses against arithmetic written out by hand."""

import math

import pytest
import torch

from rlxf.advantages import (
    discounted_returns,
    gae,
    greedy_baseline,
    group_normalized,
    kl_shaped_rewards,
    leave_one_out,
    reinforce_pp,
    whiten,
)
from rlxf.losses.policy import AdaptiveKLController, kl_estimate, ppo_clip
from rlxf.losses.reduce import aggregate
from rlxf.losses.value import clipped_value_loss


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_by_hand_and_padding_does_not_leak():
    # rewards [0, 1], values [0.5, 0.8], γ=1, λ=0.9:
    # δ1 = 1 - 0.8 = 0.2 -> A1 = 0.2; δ0 = 0 + 0.8 - 0.5 = 0.3 -> A0 = 0.3 + 0.9*0.2 = 0.48
    advantages, returns = gae(t([0.0, 1.0, 7.0]), t([0.5, 0.8, 9.0]), t([1, 1, 0]), gamma=1.0, lam=0.9)
    assert advantages.flatten().tolist() == pytest.approx([0.48, 0.2, 0.0])
    assert returns.flatten().tolist() == pytest.approx([0.98, 1.0, 0.0])
    # discounting: γ=0.5, λ=1 on one step: δ0 = 0 + 0.5*0.8 - 0.5 = -0.1; A0 = -0.1 + 0.5*0.2 = 0.0
    advantages, _ = gae(t([0.0, 1.0]), t([0.5, 0.8]), t([1, 1]), gamma=0.5, lam=1.0)
    assert advantages.flatten().tolist() == pytest.approx([0.0, 0.2])


def test_grpo_and_dr_grpo_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, sample std sqrt((4 * 0.25) / 3) = 0.57735 -> ±0.5 / 0.57735 = ±0.86603
    grpo = group_normalized(rewards, 4, eps=0.0)
    assert grpo[:4].tolist() == pytest.approx([0.86603, -0.86603, -0.86603, 0.86603], abs=1e-5)
    assert group_normalized(rewards, 4)[4:].tolist() == [0.0] * 4  # a solved group carries no signal
    assert group_normalized(rewards, 4, scale=False)[:4].tolist() == [0.5, -0.5, -0.5, 0.5]


def test_rloo_and_remax_baselines():
    # 1 - (0 + 0 + 1)/3 = 0.6667 ; 0 - (1 + 0 + 1)/3 = -0.6667
    assert leave_one_out(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4).tolist() == pytest.approx(
        [2 / 3, -2 / 3, -2 / 3, 2 / 3]
    )
    assert greedy_baseline(torch.tensor([1.0, 0.0, 0.5, 0.5]), torch.tensor([0.5, 1.0]), 2).tolist() == [
        0.5,
        -0.5,
        -0.5,
        -0.5,
    ]
    with pytest.raises(ValueError):
        leave_one_out(torch.tensor([1.0]), 1)


def test_returns_whitening_and_reinforce_pp():
    # γ = 0.5: G = [1 + 0.5*(2 + 0.5*4), 2 + 0.5*4, 4] = [3, 4, 4]
    assert discounted_returns(t([1.0, 2.0, 4.0, 9.0]), t([1, 1, 1, 0]), gamma=0.5).flatten().tolist() == [3, 4, 4, 0]
    white = whiten(t([1.0, 3.0, 100.0]), t([1, 1, 0]))
    assert white.flatten().tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)
    # two sequences, reward 1 and 0 at the last token, KL 0.1 per token, β = 1:
    # token rewards [[-0.1, 0.9], [-0.1, -0.1]] -> returns [[0.8, 0.9], [-0.2, -0.1]] -> whitened
    mask = t([1, 1], [1, 1])
    shaped = kl_shaped_rewards(t(1.0, 0.0), mask, t([0.1, 0.1], [0.1, 0.1]), kl_coef=1.0)
    assert shaped.flatten().tolist() == pytest.approx([-0.1, 0.9, -0.1, -0.1])
    advantages = reinforce_pp(shaped, mask)
    returns = torch.tensor([0.8, 0.9, -0.2, -0.1], dtype=torch.float64)
    expected = (returns - returns.mean()) / returns.std(unbiased=False)
    assert advantages.flatten().tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    # γ = 0.5 discounts the reward back: returns [[-0.1 + 0.5*0.9, 0.9], [-0.15, -0.1]] = [[0.35, 0.9], [-0.15, -0.1]]
    discounted = torch.tensor([0.35, 0.9, -0.15, -0.1], dtype=torch.float64)
    expected = (discounted - discounted.mean()) / discounted.std(unbiased=False)
    assert reinforce_pp(shaped, mask, gamma=0.5).flatten().tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_kl_shaped_rewards_put_the_reward_on_the_last_real_token():
    # a response of 2 tokens padded to 3: reward 2 on token 2, −β·KL on both real tokens, 0 on padding
    shaped = kl_shaped_rewards(t(2.0), t([1, 1, 0]), t([0.5, -0.25, 9.0]), kl_coef=0.1)
    assert shaped.flatten().tolist() == pytest.approx([-0.05, 2.025, 0.0])
    assert kl_shaped_rewards(t(2.0), t([1, 1, 0])).tolist() == [[0.0, 2.0, 0.0]]


def test_ppo_clip_by_hand_with_clip_higher():
    old = math.log(0.5)
    # ratio = 2: A = +1 -> -min(2, 1.2) = -1.2 ; A = -1 -> -min(-2, -1.2) = 2
    loss, metrics = ppo_clip(t([0.0, 0.0]), t([old, old]), t([1.0, -1.0]), clip_low=0.2)
    assert loss.flatten().tolist() == pytest.approx([-1.2, 2.0])
    assert metrics["clip_fraction"].flatten().tolist() == [1.0, 0.0]
    # clip-higher: ε_high = 0.28 -> -min(2, 1.28) = -1.28
    loss, _ = ppo_clip(t([0.0]), t([old]), t([1.0]), clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28)
    # on-policy (ratio 1) the gradient is -A · ∇log π
    logp = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    ppo_clip(logp, logp.detach(), t([3.0]))[0].sum().backward()
    assert logp.grad.item() == pytest.approx(-3.0)


def test_ppo_clip_lower_bound_by_hand():
    """ratio 0.5 with ε_low = 0.3, ε_high = 0.1 (the bounds differ, so using ε_high below 1 shows):
    A = -1: -min(0.5·(-1), clip(0.5, 0.7, 1.1)·(-1)) = -min(-0.5, -0.7) = 0.7, and no gradient;
    A = +1: -min(0.5, 0.7) = -0.5, the unclipped term, whose gradient is -ratio·A = -0.5."""
    logp = torch.full((1, 2), math.log(0.5), dtype=torch.float64, requires_grad=True)
    loss, metrics = ppo_clip(logp, torch.zeros(1, 2, dtype=torch.float64), t([-1.0, 1.0]), clip_low=0.3, clip_high=0.1)
    assert loss.flatten().tolist() == pytest.approx([0.7, -0.5])
    assert metrics["clip_fraction"].flatten().tolist() == [1.0, 0.0]
    loss.sum().backward()
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, -0.5])


def test_kl_estimators_by_hand():
    # log π - log π_ref = 0.5: k1 = 0.5, k2 = 0.125, k3 = e^-0.5 - 1 + 0.5 = 0.10653066
    logp, ref = t([0.0]), t([-0.5])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.10653066, abs=1e-8)
    assert kl_estimate(ref, ref, "k3").item() == 0.0


def test_clipped_value_loss_by_hand():
    # v = 1.0, v_old = 0.5, R = 2, ε = 0.2: clipped v = 0.7 -> ½ max(1, 1.69) = 0.845
    loss, metrics = clipped_value_loss(t([1.0]), t([0.5]), t([2.0]), clip=0.2)
    assert loss.item() == pytest.approx(0.845) and metrics["value_clipped"].item() == 1.0


def test_aggregations_by_hand_and_across_ranks():
    per_token = t([1.0, 2.0, 3.0], [4.0, 0.0, 0.0])
    mask = t([1, 1, 1], [1, 0, 0])
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate(per_token, mask, "sequence_mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(per_token, mask, "constant", max_tokens=5).item() == pytest.approx(10 / (2 * 5))
    # a batch split across two ranks, each dividing by the global counts, adds up to the whole
    for mode in ("token_mean", "sequence_mean", "constant"):
        whole = aggregate(per_token, mask, mode, max_tokens=5)
        halves = sum(
            aggregate(per_token[i : i + 1], mask[i : i + 1], mode, global_tokens=4, global_sequences=2, max_tokens=5)
            for i in (0, 1)
        )
        assert halves.item() == pytest.approx(whole.item()), mode
    # masked tokens change nothing
    noisy = per_token + (1 - mask) * 1000
    assert aggregate(noisy, mask, "token_mean").item() == pytest.approx(10 / 4)


def test_adaptive_kl_controller_moves_toward_target():
    controller = AdaptiveKLController(coef=0.1, target=6.0, horizon=100)
    # KL 12 -> error clipped to 0.2 -> 0.1 * (1 + 0.2 * 10/100) = 0.102
    assert controller.update(12.0, batch_size=10) == pytest.approx(0.102)
    # KL 3 -> error -0.5 clipped to -0.2 -> 0.102 * (1 - 0.02) = 0.09996
    assert controller.update(3.0, batch_size=10) == pytest.approx(0.09996)


def test_adaptive_kl_controller_error_is_proportional_and_the_update_multiplicative():
    """Updates inside the clip: target 5, KL 5.5 -> e = 5.5/5 - 1 = 0.1 (an additive error KL - target
    would be 0.5, clipped to 0.2); β = 0.2 · (1 + 0.1 · 10/100) = 0.202 (an additive update
    β + K·e would give 0.21). Then KL 4.5 -> e = -0.1 -> 0.202 · (1 - 0.01) = 0.19998."""
    controller = AdaptiveKLController(coef=0.2, target=5.0, horizon=100)
    assert controller.update(5.5, batch_size=10) == pytest.approx(0.202, abs=1e-12)
    assert controller.update(4.5, batch_size=10) == pytest.approx(0.19998, abs=1e-12)


def test_best_of_n_keeps_the_top_of_each_group_above_the_threshold():
    from rlxf.advantages import best_of_n, group_success_rate

    rewards = torch.tensor([0.1, 0.9, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0])
    assert best_of_n(rewards, 4).tolist() == [0, 1, 0, 0, 1, 0, 0, 0]  # ties: the earlier sample
    assert best_of_n(rewards, 4, threshold=0.5).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert best_of_n(rewards, 4, threshold=0.9).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # at the threshold: kept
    assert best_of_n(rewards, 4, top_k=2).tolist() == [0, 1, 1, 0, 1, 1, 0, 0]
    assert group_success_rate(torch.tensor([1, 0, 0, 0, 1, 1, 1, 0]), 4).tolist() == [0.25] * 4 + [0.75] * 4


def test_filtered_sft_is_the_nll_of_kept_samples():
    from rlxf.losses.policy import filtered_sft

    logp = t([-1.0, -2.0], [-3.0, -4.0])
    loss, _ = filtered_sft(logp, logp, torch.tensor([1.0, 0.0]))
    assert loss.tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_nft_by_hand_as_the_authors_code_computes_it():
    """ω = 1 - r̂, a straight-through floor ε = 1 on the implicit negative ratio x = (1 - r̂R)/(1 - r̂).

    R = 1.2 on every token (log R = 0.18232):
    correct, r̂ = 0.25: -ω log R = -0.75 · 0.18232 = -0.13674; gradient -ω = -0.75 (at any R)
    wrong,   r̂ = 0.25: x = (1 - 0.3)/0.75 = 0.93333 < 1 -> floored to 1: loss -0.75 · log 1 = 0;
             gradient -ω · (1/max(x, 1)) · dx/dlog π = -0.75 · (-r̂R/(1 - r̂)) = r̂R = 0.3
    wrong,   r̂ = 0.9:  x = (1 - 1.08)/0.1 = -0.8 -> floored: loss 0; gradient r̂R = 1.08
    R = 0.8, wrong, r̂ = 0.5: x = (1 - 0.4)/0.5 = 1.2 (no floor): loss -0.5 · log 1.2 = -0.091161;
             gradient -0.5 · (1/1.2) · (-0.5 · 0.8/0.5) = 0.33333
    """
    from rlxf.losses.policy import nft

    logp = torch.log(t([1.2, 1.2], [1.2, 1.2], [1.2, 1.2], [0.8, 0.8])).requires_grad_(True)
    loss, metrics = nft(logp, torch.zeros(4, 2, dtype=torch.float64), t(1.0, 0.0, 0.0, 0.0), t(0.25, 0.25, 0.9, 0.5))
    assert loss[:, 0].tolist() == pytest.approx([-0.13674, 0.0, 0.0, -0.091161], abs=1e-5)
    assert metrics["negative_floored"][:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    loss.sum().backward()
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.75, 0.3, 1.08, 1 / 3], rel=1e-6)


def test_nft_on_policy_gradient_is_dr_grpos():
    """At R = 1 the gradient is a policy gradient with advantage s - r̂: -(1 - r̂) for a correct
    sample, +r̂ for a wrong one."""
    from rlxf.losses.policy import nft

    logp = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    loss, _ = nft(logp, logp.detach(), torch.tensor([1.0, 0.0]), torch.tensor([0.25, 0.25]))
    loss.sum().backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.75, 0.25])


def test_nft_ratio_is_clamped_above_and_rates_clipped():
    """log R is cut at 10 before the exponential (no gradient beyond); r̂ = 0 is clipped to 0.02."""
    from rlxf.losses.policy import nft

    logp = torch.full((1, 1), 12.0, dtype=torch.float64, requires_grad=True)
    loss, _ = nft(logp, torch.zeros(1, 1, dtype=torch.float64), t(1.0), t(0.0))
    assert loss.item() == pytest.approx(-(1 - 0.02) * 10.0)
    loss.sum().backward()
    assert logp.grad.item() == 0.0


def test_nft_trains_only_on_prompts_with_right_and_wrong_samples():
    from rlxf.advantages import success_rates

    # groups of 2: both right, one of each, both wrong
    # groups of 2: both right, one of each, both wrong; a reward at the threshold is a success
    labels = success_rates(t(1.0, 0.7, 0.5, 0.0, 0.2, 0.1), 2, threshold=0.5)
    assert labels["success"].tolist() == [1, 1, 1, 0, 0, 0]
    assert labels["success_rate"].tolist() == [1, 1, 0.5, 0.5, 0, 0]
    assert labels["trained"].tolist() == [0, 0, 1, 1, 0, 0]


def test_entropy_bonus_rewards_entropy():
    from rlxf.losses.policy import entropy_bonus

    # subtracted from the loss: higher entropy, lower loss
    assert entropy_bonus(t([2.0, 0.5]), coef=0.1).flatten().tolist() == pytest.approx([-0.2, -0.05])


def test_kl_loss_term_is_the_coefficient_times_the_estimate():
    from rlxf.losses.policy import kl_loss

    # log π - log π_ref = 0.5: k3 = 0.10653066, times β = 0.2
    term, _ = kl_loss(t([0.0]), t([-0.5]), coef=0.2, kind="k3")
    assert term.item() == pytest.approx(0.2 * 0.10653066, abs=1e-9)


def test_truncated_importance_weights_by_hand():
    from rlxf.losses.policy import truncated_importance_weights

    old = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.3)]], requires_grad=True)
    sampler = torch.tensor([[math.log(0.25), math.log(0.4), math.log(0.3)]])
    weights = truncated_importance_weights(old, sampler, cap=1.5)
    # 0.5 / 0.25 = 2 -> capped at 1.5; 0.2 / 0.4 = 0.5; 0.3 / 0.3 = 1
    assert torch.allclose(weights, torch.tensor([[1.5, 0.5, 1.0]]))
    assert not weights.requires_grad

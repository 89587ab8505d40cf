"""Advantage estimators for online RL: GAE, group-normalized, leave-one-out, greedy baseline, ...

All are pure functions over tensors. Sequence-level rewards are (B,) tensors; token-level
quantities are (B, T) with a 0/1 ``mask`` marking response tokens. ``ADVANTAGE_ESTIMATORS`` at
the end names each for the online loop: an estimator reads :class:`AdvantageInputs` and returns
the named per-sample targets its policy loss reads (:mod:`rlxf.losses.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from rlxf.losses.nash import sppo_targets


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation.

    Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation" (ICLR 2016), Eq. 16: ``δ_t = r_t + γ V_{t+1} - V_t``,
    ``A_t = δ_t + γλ A_{t+1}``; the value after the last response token is 0.

    rewards, values, mask: (B, T). Returns (advantages, returns = advantages + values), zero
    where ``mask`` is 0.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        # padding after a response must not leak into it: only real tokens carry values forward
        next_value = torch.where(mask[:, t] > 0, values[:, t], next_value)
        next_advantage = torch.where(mask[:, t] > 0, advantages[:, t], next_advantage)
    return advantages, (advantages + values) * mask


def macro_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, macro_ids: Tensor, *, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """GAE over macro actions (MA-RLHF: Chai et al., "MA-RLHF: Reinforcement Learning from Human
    Feedback with Macro Actions", ICLR 2025), as the authors' code computes it: a macro action's reward
    and value are the means of its tokens' rewards and critic values, ``δ_τ = R_τ + γ V_{τ+1} − V_τ``,
    ``A_τ = δ_τ + γλ A_{τ+1}``, and every token of macro action τ takes ``A_τ`` and the return
    ``A_τ + V_τ``; the policy's ratio stays per token.

    rewards, values, mask: (B, T); macro_ids: (B, T) the index (0, 1, ...) of each token's macro
    action, non-decreasing along a response. Returns (advantages, returns), zero where ``mask`` is 0.
    """
    mask = mask.to(values.dtype)
    ids = (macro_ids * (mask > 0)).long()
    width = int(ids.max()) + 1 if ids.numel() else 1
    counts = torch.zeros(values.shape[0], width, dtype=values.dtype).scatter_add(1, ids, mask)

    def mean_per_macro(x: Tensor) -> Tensor:
        return torch.zeros_like(counts).scatter_add(1, ids, x * mask) / counts.clamp(min=1)

    macro_mask = (counts > 0).to(values.dtype)
    advantages, returns = gae(mean_per_macro(rewards), mean_per_macro(values), macro_mask, gamma=gamma, lam=lam)
    return advantages.gather(1, ids) * mask, returns.gather(1, ids) * mask


def fixed_macro_ids(mask: Tensor, size: int) -> Tensor:
    """MA-RLHF's fixed n-gram macro actions: ``size`` tokens each, the last token of every response
    one of its own (where the sequence reward sits, so that a mean does not dilute it), as the
    authors' code cuts them. mask: (B, T). Returns (B, T) macro indices."""
    position = mask.cumsum(dim=1) - 1  # 0, 1, ... along each response
    length = mask.sum(dim=1, keepdim=True)
    ids = torch.div(position, size, rounding_mode="floor")
    last = position == length - 1
    previous = torch.div((length - 2).clamp(min=0), size, rounding_mode="floor") + 1
    return torch.where(last & (length > 1), previous, ids).clamp(min=0).long() * (mask > 0)


def ids_from_ends(ends: list[list[bool]], width: int) -> Tensor:
    """(B, T) macro indices from, per response, whether each token ends a macro action (the last
    token always does, alone)."""
    ids = torch.zeros(len(ends), width, dtype=torch.long)
    for row, flags in enumerate(ends):
        macro = 0
        for t, ends_here in enumerate(flags):
            if t == len(flags) - 1 and t > 0 and not flags[t - 1]:
                macro += 1  # the last token is a macro action of its own
            ids[row, t] = macro
            macro += bool(ends_here)
    return ids


def group_normalized(rewards: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages: each reward against the other samples of its prompt.

    GRPO: Shao et al., "DeepSeekMath" (2024), Sec. 4.1.2: ``A_i = (r_i - mean(r)) / std(r)``
    (sample standard deviation). ``scale=False`` is Dr. GRPO, Liu et al., "Understanding
    R1-Zero-Like Training: A Critical Perspective" (2025), Sec. 3.2: ``A_i = r_i - mean(r)``,
    which removes the difficulty bias of dividing by the group's spread.

    rewards: (G * group_size,), samples of one prompt adjacent. Returns (G * group_size,).
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def leave_one_out(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: each sample's baseline is the mean reward of the other samples of its prompt.

    Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for Free!" (2019); Ahmadian et al.,
    "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs" (ACL 2024), Eq. 5: ``A_i = r_i - 1/(k-1) Σ_{j≠i} r_j``.
    """
    if group_size < 2:
        raise ValueError("leave-one-out needs at least 2 samples per prompt")
    grouped = rewards.view(-1, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def greedy_baseline(rewards: Tensor, greedy_rewards: Tensor, group_size: int = 1) -> Tensor:
    """ReMax: the baseline is the reward of the greedy response to the same prompt.

    Li et al., "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for
    Aligning Large Language Models" (ICML 2024), Algorithm 1: ``A_i = r(x, y_i) - r(x, ŷ)``.

    rewards: (G * group_size,); greedy_rewards: (G,).
    """
    return (rewards.view(-1, group_size) - greedy_rewards.view(-1, 1)).reshape(-1)


def discounted_returns(token_rewards: Tensor, mask: Tensor, *, gamma: float = 1.0) -> Tensor:
    """``G_t = Σ_{s ≥ t} γ^{s-t} r_s`` over response tokens (B, T)."""
    mask = mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t] + running * (1 - mask[:, t])
        returns[:, t] = running * mask[:, t]
    return returns


def _same(total: Tensor) -> Tensor:
    return total


def whiten(
    values: Tensor,
    mask: Tensor,
    *,
    eps: float = 1e-8,
    shift_mean: bool = True,
    global_sum: Callable[[Tensor], Tensor] = _same,
) -> Tensor:
    """Normalize masked entries to zero mean and unit variance over the whole batch.

    ``global_sum`` turns this rank's sums into the global batch's (an all-reduce across ranks).
    """
    mask = mask.to(values.dtype)
    count = global_sum(mask.sum()).clamp(min=1)
    mean = global_sum((values * mask).sum()) / count
    variance = global_sum((((values - mean) * mask) ** 2).sum()) / count
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def reinforce_pp(
    token_rewards: Tensor,
    mask: Tensor,
    *,
    gamma: float = 1.0,
    global_sum: Callable[[Tensor], Tensor] = _same,
) -> Tensor:
    """REINFORCE++ advantages: returns of token-level rewards, whitened over the whole batch.

    Hu, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models"
    (2025), Sec. 3: ``r_t = 1[t = last]·r(x, y) - β·KL_t`` (see :func:`kl_shaped_rewards`),
    ``A_t = Σ_{s≥t} γ^{s-t} r_s``, then normalized over the global batch (as OpenRLHF does).

    token_rewards, mask: (B, T). Returns (B, T).
    """
    return whiten(discounted_returns(token_rewards, mask, gamma=gamma), mask, global_sum=global_sum)


def kl_shaped_rewards(
    rewards: Tensor, mask: Tensor, kl: Tensor | None = None, *, kl_coef: float = 0.0, dense: Tensor | None = None
) -> Tensor:
    """Per-token rewards: the sequence reward on each response's last token, minus ``β·KL_t`` on
    every token when ``kl`` is given (the KL penalty in the reward of Ziegler et al. 2019 and
    Ouyang et al. 2022, Eq. 2, spread over tokens as InstructGPT's and REINFORCE++'s code do).
    ``dense`` is the part of the reward given on tokens of its own (fine-grained segment rewards, Wu
    et al. 2023, Eq. 1): it stays there, and only ``rewards − Σ_t dense_t`` goes on the last token.

    rewards: (B,); mask, kl, dense: (B, T). Returns (B, T), zero off the mask.
    """
    mask = mask.to(rewards.dtype)
    last = (mask.cumsum(dim=1) == mask.sum(dim=1, keepdim=True)) & (mask > 0)
    at_end = rewards if dense is None else rewards - (dense * mask).sum(dim=1)
    shaped = last.to(rewards.dtype) * at_end[:, None]
    if dense is not None:
        shaped = shaped + dense * mask
    if kl is not None:
        shaped = shaped - kl_coef * kl * mask
    return shaped


def best_of_n(rewards: Tensor, group_size: int, *, top_k: int = 1, threshold: float | None = None) -> Tensor:
    """Which samples a rejection-sampling fine-tune keeps: the ``top_k`` best of each prompt's
    group, and of those only the ones at or above ``threshold`` (when given).

    Rejection sampling fine-tuning, Yuan et al., "Scaling Relationship on Learning Mathematical
    Reasoning with Large Language Models" (2023), Sec. 3.3 (keep correct samples); SuperHF,
    Mukobi et al., "SuperHF: Supervised Iterative Learning from Human Feedback" (2023), Sec. 3
    (keep the reward model's best of n). Ties keep the earlier sample.

    rewards: (G * group_size,). Returns a (G * group_size,) 0/1 float mask.
    """
    grouped = rewards.view(-1, group_size)
    k = min(top_k, group_size)
    # stable descending sort: equal rewards keep sample order
    order = torch.sort(grouped, dim=1, descending=True, stable=True).indices[:, :k]
    keep = torch.zeros_like(grouped).scatter_(1, order, 1.0)
    if threshold is not None:
        keep = keep * (grouped >= threshold).to(keep.dtype)
    return keep.reshape(-1)


def group_success_rate(success: Tensor, group_size: int) -> Tensor:
    """``r̂_q``: the share of each prompt's samples that succeeded, repeated for every sample.

    success: (G * group_size,) 0/1. Returns (G * group_size,).
    """
    grouped = success.view(-1, group_size).to(torch.float32)
    return grouped.mean(dim=1, keepdim=True).expand_as(grouped).reshape(-1)


def success_rates(rewards: Tensor, group_size: int, *, threshold: float) -> dict[str, Tensor]:
    """NFT's labels: each sample's success (reward ≥ threshold), its prompt's success rate ``r̂``,
    and ``trained``: only prompts with some right and some wrong samples are trained on
    (Chen et al. 2025, Algorithm 1, which keeps ``0 < r̂ < 1``).

    rewards: (G * group_size,). Returns three (G * group_size,) tensors.
    """
    success = (rewards >= threshold).float()
    rate = group_success_rate(success, group_size)
    return {"success": success, "success_rate": rate, "trained": ((rate > 0) & (rate < 1)).float()}


# ---- the registry the online loop picks from --------------------------------------------------


@dataclass
class AdvantageInputs:
    """What an estimator may read; each reads some."""

    rewards: Tensor  # (B,) sequence rewards, with the KL penalty when the algorithm puts it in the reward
    token_rewards: Tensor  # (B, T) the same on tokens: the reward on the last one, -β·KL_t on each (kl_shaped_rewards)
    mask: Tensor  # (B, T) response tokens
    group_size: int  # samples per prompt, adjacent
    greedy_rewards: Tensor | None = None  # (G,) rewards of each prompt's greedy completion (ReMax)
    values: Tensor | None = None  # (B, T) critic values V(s_t) (PPO)
    gamma: float = 1.0
    lam: float = 0.95
    top_k: int = 1  # best-of-n: samples kept per prompt
    threshold: float = 0.5  # best-of-n: lowest kept reward; NFT: lowest correct reward
    eta: float = 1.0  # SPPO's step η
    macro_ids: Tensor | None = None  # (B, T) MA-RLHF's macro action of each token; None: every token its own
    global_sum: Callable[[Tensor], Tensor] = _same  # this rank's sums -> the global batch's (whitening)


def _estimator(
    *produces: str, needs: tuple[str, ...] = (), reads: tuple[str, ...] = (), groups: bool = False
) -> Callable:
    """Marks an estimator with the targets it ``produces``, the optional inputs it ``needs``
    ("values": a critic, "greedy_rewards": a greedy rollout), the settings of AdvantageInputs it
    ``reads`` (gamma, lam, top_k, threshold) and whether it compares the samples of a prompt
    (``groups``: n >= 2)."""

    def mark(fn: Callable) -> Callable:
        fn.produces, fn.needs, fn.reads, fn.groups = produces, needs, reads, groups
        return fn

    return mark


def _per_token(advantages: Tensor, mask: Tensor) -> dict[str, Tensor]:
    return {"advantages": advantages[:, None] * mask}


@_estimator("advantages", groups=True)
def _grpo(x: AdvantageInputs) -> dict[str, Tensor]:
    return _per_token(group_normalized(x.rewards, x.group_size), x.mask)


@_estimator("advantages", groups=True)
def _dr_grpo(x: AdvantageInputs) -> dict[str, Tensor]:
    return _per_token(group_normalized(x.rewards, x.group_size, scale=False), x.mask)


@_estimator("advantages", groups=True)
def _rloo(x: AdvantageInputs) -> dict[str, Tensor]:
    return _per_token(leave_one_out(x.rewards, x.group_size), x.mask)


@_estimator("advantages", needs=("greedy_rewards",))
def _remax(x: AdvantageInputs) -> dict[str, Tensor]:
    return _per_token(greedy_baseline(x.rewards, x.greedy_rewards, x.group_size), x.mask)


@_estimator("advantages", reads=("gamma",))
def _reinforce_pp(x: AdvantageInputs) -> dict[str, Tensor]:
    return {"advantages": reinforce_pp(x.token_rewards, x.mask, gamma=x.gamma, global_sum=x.global_sum)}


@_estimator("advantages", "returns", needs=("values",), reads=("gamma", "lam"))
def _gae(x: AdvantageInputs) -> dict[str, Tensor]:
    """GAE advantages whitened over the global batch (as OpenRLHF and TRL's PPO do), and returns
    (the critic's targets)."""
    if x.macro_ids is None:
        advantages, returns = gae(x.token_rewards, x.values, x.mask, gamma=x.gamma, lam=x.lam)
    else:
        advantages, returns = macro_gae(x.token_rewards, x.values, x.mask, x.macro_ids, gamma=x.gamma, lam=x.lam)
    return {"advantages": whiten(advantages, x.mask, global_sum=x.global_sum), "returns": returns}


@_estimator("keep", "trained", reads=("top_k", "threshold"))
def _best_of_n(x: AdvantageInputs) -> dict[str, Tensor]:
    keep = best_of_n(x.rewards, x.group_size, top_k=x.top_k, threshold=x.threshold)
    return {"keep": keep, "trained": keep}


@_estimator("success", "success_rate", "trained", reads=("threshold",), groups=True)
def _success_rate(x: AdvantageInputs) -> dict[str, Tensor]:
    return success_rates(x.rewards, x.group_size, threshold=x.threshold)


def sppo_soft_mean(rewards: Tensor, group_size: int, *, eta: float) -> Tensor:
    """SPPO's per-sample targets η (r - SoftMean_η(r)), the soft mean (1/η) log mean exp(η r)
    over each prompt's samples (:func:`rlxf.losses.nash.sppo_targets`; Wu et al. 2024 as verl's
    recipe computes it, per prompt rather than over the batch)."""
    return sppo_targets(rewards.view(-1, group_size), eta=eta).flatten()


@_estimator("sppo_targets", reads=("eta",), groups=True)
def _sppo(x: AdvantageInputs) -> dict[str, Tensor]:
    return {"sppo_targets": sppo_soft_mean(x.rewards, x.group_size, eta=x.eta)}


ADVANTAGE_ESTIMATORS: dict[str, Callable[[AdvantageInputs], dict[str, Tensor]]] = {
    "group_normalized": _grpo,
    "group_centered": _dr_grpo,
    "leave_one_out": _rloo,
    "greedy_baseline": _remax,
    "reinforce_pp": _reinforce_pp,
    "gae": _gae,
    "best_of_n": _best_of_n,
    "success_rate": _success_rate,
    "sppo_soft_mean": _sppo,
}
"""Per-sample training targets by name (``advantages``, ``returns``, ``keep``, ...): one function
and one line here add an estimator. A ``trained`` target (B,) of 0/1 limits the loss to those samples."""

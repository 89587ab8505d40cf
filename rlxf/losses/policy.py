"""Policy losses for online RL, per token, before aggregation, and the registry the online loop picks from.

Token tensors are (B, T); ``logprobs`` are log π_θ of the sampled tokens and ``old_logprobs`` those
of the policy that the update starts from (π_old). Every registered loss is called as

    loss(logprobs, old_logprobs, *targets, **options) -> (per_token_loss (B, T), metrics)

where ``targets`` are the per-sample tensors named by the loss's ``inputs`` attribute (what an
advantage estimator of :mod:`rlxf.advantages` produced, e.g. ``advantages``), in that order, and
``options`` its keyword hyperparameters. Turn the result into a scalar with
:func:`rlxf.losses.reduce.aggregate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from rlxf.losses.nash import sppo

KLEstimator = Literal["k1", "k2", "k3"]
Metrics = dict[str, Tensor]


def _policy_loss(*inputs: str) -> Callable:
    """Marks a policy loss with the names of the per-sample targets it reads after the log-probs."""

    def mark(fn: Callable) -> Callable:
        fn.inputs = inputs
        return fn

    return mark


@_policy_loss("advantages")
def ppo_clip(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> tuple[Tensor, Metrics]:
    """Clipped surrogate objective, as a loss to minimize.

    Schulman et al., "Proximal Policy Optimization Algorithms" (2017), Eq. 7:
    ``-min(ρ A, clip(ρ, 1-ε_low, 1+ε_high) A)`` with ``ρ = exp(log π - log π_old)``.
    ``clip_high`` above ``clip_low`` is DAPO's clip-higher (Yu et al., "DAPO: An Open-Source
    LLM Reinforcement Learning System at Scale", 2025, Eq. 10); by default both are ε.

    advantages: (B, T), or (B, 1) for one advantage per sequence.
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = ((ratio > 1 + clip_high) & (advantages > 0)) | ((ratio < 1 - clip_low) & (advantages < 0))
    return loss, {"ratio": ratio.detach(), "clip_fraction": was_clipped.float()}


@_policy_loss("keep")
def filtered_sft(logprobs: Tensor, old_logprobs: Tensor, keep: Tensor) -> tuple[Tensor, Metrics]:
    """Negative log-likelihood of the kept samples only: rejection-sampling fine-tuning.

    RFT (Yuan et al. 2023) and SuperHF (Mukobi et al. 2023, which adds a KL term to the
    reference, here the loop's ``kl_coef``): sample n, keep the best (see
    :func:`rlxf.advantages.best_of_n`), and fine-tune on them, ``-keep · log π_θ(y_t)``.
    ``old_logprobs`` are not used: fine-tuning has no ratio to the sampling policy.

    logprobs: (B, T); keep: (B,) 0/1. Returns a (B, T) per-token loss.
    """
    keep = keep.to(logprobs.dtype)[:, None]
    return -keep * logprobs, {}


def _floored(values: Tensor, floor: float) -> Tensor:
    """``max(values, floor)`` forward, the unfloored gradient backward (a straight-through floor)."""
    return values + (values.clamp(min=floor) - values).detach()


@_policy_loss("success", "success_rate")
def nft(
    logprobs: Tensor,
    old_logprobs: Tensor,
    success: Tensor,
    success_rate: Tensor,
    *,
    negative_floor: float = 1.0,
    rate_clip: float = 0.02,
    max_log_ratio: float = 10.0,
) -> tuple[Tensor, Metrics]:
    """Negative-aware Fine-Tuning: supervised learning on both correct and wrong samples.

    Chen et al., "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning"
    (2025), the NFT objective (Eq. 9-10) as the authors' training code computes it (NVlabs/NFT,
    ``dp_actor.py``). With the token ratio ``R = π_θ / π_old``, the prompt's success rate ``r̂``
    and the prompt weight ``ω = 1 - r̂``, a correct sample (s = 1) maximizes ``log R`` and a
    wrong one the likelihood of the implicit negative policy ``(1 - r̂ R) / (1 - r̂)``:

        loss_t = -ω · [ s · log R + (1 - s) · log max((1 - r̂ R) / (1 - r̂), ε) ]

    Where the code and the paper's equation differ, rlxf follows the code: ``ω = 1 - r̂``
    (their default ``normalize=1``; the paper also discusses ω = 1); ``ε = 1`` (their
    ``clamp_negative``), applied as a straight-through floor: the value is floored, the gradient
    of the unfloored ratio passes (so a wrong token's gradient weight is ``r̂R / max(x, ε)``,
    capped near its on-policy value ``r̂``); ``r̂`` clipped to ``[rate_clip, 1 - rate_clip]``;
    ``log R`` clamped at ``max_log_ratio`` before the exponential. Prompts whose samples are all
    correct or all wrong are not trained on (the authors' dynamic sampling drops them; the online
    loop leaves them out of the loss mask, see :func:`rlxf.advantages.success_rates`). On-policy
    (R = 1) the gradient is a policy gradient with advantage ``s - r̂``, Dr. GRPO's.

    logprobs, old_logprobs: (B, T); success, success_rate: (B,). Returns (B, T).
    """
    log_ratio = (logprobs - old_logprobs).clamp(max=max_log_ratio)
    ratio = torch.exp(log_ratio)
    rate = success_rate.to(ratio.dtype).clamp(rate_clip, 1 - rate_clip)[:, None]
    implicit_negative = (1 - rate * ratio) / (1 - rate)
    s = success.to(ratio.dtype)[:, None]
    loss = -(1 - rate) * (s * log_ratio + (1 - s) * torch.log(_floored(implicit_negative, negative_floor)))
    floored = ((implicit_negative < negative_floor) & (s < 1)).float()
    return loss, {"ratio": ratio.detach(), "negative_floored": floored.detach()}


@_policy_loss("sppo_targets")
def sppo_regression(logprobs: Tensor, old_logprobs: Tensor, sppo_targets: Tensor) -> tuple[Tensor, Metrics]:
    """SPPO's squared loss on the sequence log-ratio, spread over tokens with its exact gradient.

    Wu et al., "Self-Play Preference Optimization for Language Model Alignment" (2024), as verl's
    recipe trains it: ``(log π(y)/π_old(y) - target)²`` per sequence (:func:`rlxf.losses.nash.sppo`),
    target from :func:`rlxf.advantages.sppo_soft_mean`. With S = Σ_t (log π_t - log π_old,t) its
    gradient is ``2 (S - target) ∇S``, so the per-token loss ``2 sg(S - target) · log π_t``, summed
    over a sequence's tokens (aggregation ``sequence_sum``), has it; ``sppo_loss`` in the metrics is
    the squared loss itself. Padding holds 0 in both log-prob tensors, so S needs no mask.

    logprobs, old_logprobs: (B, T); sppo_targets: (B,). Returns (B, T).
    """
    log_ratio = (logprobs - old_logprobs).sum(-1)
    squared, _ = sppo(log_ratio, torch.zeros_like(log_ratio), sppo_targets)
    residual = (log_ratio - sppo_targets.to(log_ratio.dtype)).detach()
    return 2 * residual[:, None] * logprobs, {"sppo_loss": squared.detach()[:, None].expand_as(logprobs)}


POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "clipped_pg": ppo_clip,
    "filtered_sft": filtered_sft,
    "nft": nft,
    "sppo": sppo_regression,
}
"""Per-token policy losses by name: one function and one line here add one."""


def truncated_importance_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, *, cap: float) -> Tensor:
    """Per-token weights ``min(π_old / π_sampler, C)`` for samples drawn by another policy.

    Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (2025):
    when the sampler's distribution differs from the trainer's — a different engine's numerics,
    or rollouts generated one update earlier — the policy-gradient term of each token is
    weighted by the importance ratio of the trainer's (pre-update) policy to the sampler's,
    truncated at C to bound the variance. No gradient flows through the weights.

    old_logprobs, sampler_logprobs: (B, T) log-probs of the sampled tokens. Returns (B, T).
    """
    return torch.exp(old_logprobs.detach() - sampler_logprobs.detach()).clamp(max=cap)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(π || π_ref) from tokens sampled from π.

    Schulman, "Approximating KL Divergence" (2020), with ``log r = log π_ref - log π``:
    k1 ``= -log r`` (unbiased, high variance), k2 ``= ½ (log r)²`` (biased, low variance),
    k3 ``= (r - 1) - log r`` (unbiased, low variance, always ≥ 0).
    """
    log_r = ref_logprobs - logprobs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def kl_loss(logprobs: Tensor, ref_logprobs: Tensor, *, coef: float, kind: KLEstimator = "k3") -> tuple[Tensor, Metrics]:
    """KL to the reference as a loss term (GRPO, Shao et al. 2024, Eq. 3, with k3 as its Eq. 4):
    ``coef · KL̂_t`` per token."""
    kl = kl_estimate(logprobs, ref_logprobs, kind)
    return coef * kl, {"kl_loss_term": kl.detach()}


def entropy_bonus(entropy: Tensor, *, coef: float) -> Tensor:
    """``-coef · H(π(·|s_t))`` per token: subtracting it rewards exploration (Williams & Peng, 1991)."""
    return -coef * entropy


@dataclass
class AdaptiveKLController:
    """Adjusts the KL coefficient toward a target KL.

    Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019), Sec. 2.2:
    ``e = clip(KL/target - 1, -0.2, 0.2)``, ``β ← β (1 + K_β e)`` with ``K_β = n / horizon``.
    """

    coef: float
    target: float
    horizon: int = 10000

    def update(self, observed_kl: float, batch_size: int) -> float:
        error = min(max(observed_kl / self.target - 1, -0.2), 0.2)
        self.coef *= 1 + error * batch_size / self.horizon
        return self.coef

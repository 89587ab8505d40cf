"""Policy-gradient losses for online RL, per token, before aggregation.

Token tensors are (B, T); ``logprobs`` are log π_θ of the sampled tokens. Losses return
``(per_token_loss, metrics)``; turn them into a scalar with :func:`rlxf.losses.reduce.aggregate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def ppo_clip(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
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
    return loss, {"ratio": ratio.detach(), "clipped": was_clipped.float()}


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


def filtered_sft(logprobs: Tensor, keep: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood of the kept samples only: rejection-sampling fine-tuning.

    RFT (Yuan et al. 2023) and SuperHF (Mukobi et al. 2023, which adds a KL term to the
    reference, here the loop's ``kl_coef``): sample n, keep the best (see
    :func:`rlxf.advantages.best_of_n`), and fine-tune on them, ``-keep · log π_θ(y_t)``.

    logprobs: (B, T); keep: (B,) 0/1. Returns a (B, T) per-token loss.
    """
    keep = keep.to(logprobs.dtype)[:, None]
    return -keep * logprobs, {"kept": keep.detach().squeeze(1)}


def nft(
    logprobs: Tensor,
    old_logprobs: Tensor,
    success: Tensor,
    success_rate: Tensor,
    *,
    negative_floor: float = 1e-3,
    rate_clip: float = 0.02,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative-aware Fine-Tuning: supervised learning on both correct and wrong samples.

    Chen et al., "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning"
    (2025), Eq. 9. With the token ratio ``R = π_θ / π_old`` and the prompt's success rate
    ``r̂``, a correct sample maximizes ``log R`` and a wrong one maximizes the likelihood of
    the implicit negative policy, ``log (1 - r̂ R) / (1 - r̂)``:

        loss_t = -[ s · log R + (1 - s) · log max((1 - r̂ R) / (1 - r̂), ε) ]

    The ``max(·, ε)`` keeps the value finite and lets the gradient through unchanged (as the
    paper does). ``r̂`` is clipped to ``[rate_clip, 1 - rate_clip]``. On-policy (R = 1) the
    gradient equals a policy gradient with advantage 1 for correct and ``-r̂/(1-r̂)`` for wrong
    samples.

    logprobs, old_logprobs: (B, T); success, success_rate: (B,). Returns (B, T).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    rate = success_rate.to(ratio.dtype).clamp(rate_clip, 1 - rate_clip)[:, None]
    implicit_negative = (1 - rate * ratio) / (1 - rate)
    floored = implicit_negative + (implicit_negative.clamp(min=negative_floor) - implicit_negative).detach()
    s = success.to(ratio.dtype)[:, None]
    loss = -(s * (logprobs - old_logprobs) + (1 - s) * torch.log(floored))
    return loss, {"ratio": ratio.detach(), "floored": (implicit_negative < negative_floor).float().detach()}


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


def kl_loss(logprobs: Tensor, ref_logprobs: Tensor, *, coef: float, kind: KLEstimator = "k3") -> tuple[Tensor, dict]:
    """KL to the reference as a loss term (GRPO, Shao et al. 2024, Eq. 3 uses k3): ``coef · KL̂_t``."""
    kl = kl_estimate(logprobs, ref_logprobs, kind)
    return coef * kl, {"kl": kl.detach()}


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

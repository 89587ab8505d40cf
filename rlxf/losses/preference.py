"""Offline preference-optimization losses (the DPO family).

Every paired loss has the signature::

    loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta, ...)

with per-example log-probabilities of shape (B,), and returns
``(per_example_loss (B,), metrics)`` where every metric is a detached (B,) tensor.
``h`` below is the difference of log-ratios
``h = [log π(y_w|x) - log π_ref(y_w|x)] - [log π(y_l|x) - log π_ref(y_l|x)]``.

Two attributes on each function tell a recipe what to feed it:
``needs_reference`` (reference log-probs are used) and ``length_normalized``
(by default the log-probs are the mean per completion token rather than the sum; the DPO
recipe's ``logps`` setting can choose either for any loss).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, Tensor]


def _loss_spec(*, needs_reference: bool = True, length_normalized: bool = False) -> Callable:
    def mark(fn: Callable) -> Callable:
        fn.needs_reference = needs_reference
        fn.length_normalized = length_normalized
        return fn

    return mark


def _reward_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Metrics:
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margin": chosen_rewards - rejected_rewards,
        "rewards/accuracy": (chosen_rewards > rejected_rewards).float(),
    }


def _log_ratio_gap(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> Tensor:
    return (pc - rc) - (pr - rr)


def _implicit_reward_metrics(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> Metrics:
    return _reward_metrics(beta * (pc - rc), beta * (pr - rr))


@_loss_spec()
def dpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Metrics]:
    """Direct Preference Optimization.

    Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly
    a Reward Model" (NeurIPS 2023), Eq. 7: ``loss = -log σ(β h)``.
    """
    h = _log_ratio_gap(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(beta * h)
    return loss, _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


@_loss_spec()
def cdpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
) -> tuple[Tensor, Metrics]:
    """Conservative DPO: DPO with labels flipped with probability ε.

    Mitchell, "A note on DPO with noisy preferences & relationship to IPO" (2023):
    ``loss = -(1-ε) log σ(β h) - ε log σ(-β h)``.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = _log_ratio_gap(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return loss, _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


@_loss_spec()
def robust(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
) -> tuple[Tensor, Metrics]:
    """Robust DPO: an unbiased loss under preference noise with flip rate ε.

    Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy
    Feedback" (ICML 2024), Eq. 6:
    ``loss = [(1-ε)(-log σ(β h)) - ε(-log σ(-β h))] / (1 - 2ε)``.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = _log_ratio_gap(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return loss, _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


@_loss_spec(length_normalized=True)
def ipo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Metrics]:
    """Identity Preference Optimization.

    Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
    Preferences" (AISTATS 2024), Eq. 17 with τ = β: ``loss = (h - 1/(2β))²``.
    By default the log-probabilities are averaged over each completion's tokens, as TRL computes
    IPO (its DPOTrainer notes that the IPO authors confirmed the paper's results use this form);
    the paper's equation as written sums them (``logps=sum`` in the DPO recipe).
    """
    h = _log_ratio_gap(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = (h - 1 / (2 * beta)) ** 2
    return loss, _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


@_loss_spec()
def hinge(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Metrics]:
    """Hinge (SLiC) calibration loss on the reference-normalized log-ratio.

    Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback" (2023),
    Eq. 2 with margin δ = 1/β, normalized by the reference as in Liu et al.,
    "Statistical Rejection Sampling Improves Preference Optimization" (ICLR 2024):
    ``loss = max(0, 1 - β h)``.
    """
    h = _log_ratio_gap(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = torch.relu(1 - beta * h)
    return loss, _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


@_loss_spec(needs_reference=False, length_normalized=True)
def simpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float,
    gamma: float = 0.5,
) -> tuple[Tensor, Metrics]:
    """Simple Preference Optimization: reference-free, length-normalized, with a margin.

    Meng et al., "SimPO: Simple Preference Optimization with a Reference-Free Reward"
    (NeurIPS 2024), Eq. 6, with log-probs averaged over completion tokens:
    ``loss = -log σ(β (avg log π(y_w|x) - avg log π(y_l|x)) - γ)``.
    Reference log-probs, if given, are ignored.
    """
    margin = beta * (policy_chosen_logps - policy_rejected_logps) - gamma
    loss = -F.logsigmoid(margin)
    return loss, _reward_metrics(beta * policy_chosen_logps, beta * policy_rejected_logps)


@_loss_spec(needs_reference=False)
def cpl(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float,
    bias: float = 0.5,
) -> tuple[Tensor, Metrics]:
    """Contrastive Preference Learning: the regret preference model with the optimal advantage
    α log π, so preferences train the policy directly, without a reward or RL.

    Hejna et al., "Contrastive Preference Learning: Learning from Human Feedback without RL"
    (ICLR 2024): the CPL objective with its conservative bias λ; with S = α Σ_t log π(a_t|s_t)
    (β is α here; a completion's tokens are its actions, undiscounted as in the authors' code),
    ``loss = -log [e^{S+} / (e^{S+} + e^{λ S-})] = softplus(λ S- - S+)``. λ = ``bias`` (the authors'
    default 0.5) weighs down the rejected segment; λ = 1 is the plain contrastive loss.
    Reference log-probs, if given, are ignored.
    """
    if not 0 < bias <= 1:
        raise ValueError(f"cpl's bias must be in (0, 1], got {bias}")
    chosen, rejected = beta * policy_chosen_logps, beta * policy_rejected_logps
    loss = F.softplus(bias * rejected - chosen)
    return loss, _reward_metrics(chosen, rejected)


def kto(
    policy_logps: Tensor,
    ref_logps: Tensor,
    desirable: Tensor,
    *,
    beta: float,
    kl: Tensor,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, Metrics]:
    """Kahneman-Tversky Optimization on unpaired binary feedback.

    Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization"
    (ICML 2024), Eq. 8. With ``r = log π(y|x) - log π_ref(y|x)`` and the reference
    point ``z0 = max(0, kl)`` (no gradient flows through it)::

        desirable:   λ_D (1 - σ(β (r - z0)))
        undesirable: λ_U (1 - σ(β (z0 - r)))

    ``kl`` is an estimate of KL(π || π_ref), e.g. :func:`kto_kl_estimate` over
    mismatched prompt/completion pairs of the batch.
    """
    rewards = policy_logps - ref_logps
    z0 = kl.detach().clamp(min=0)
    desirable = desirable.bool()
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (rewards - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rewards))),
    )
    metrics = {
        "rewards/implicit": beta * rewards.detach(),
        "rewards/accuracy": ((rewards.detach() > z0) == desirable).float(),
        "kl": z0.expand_as(rewards),
    }
    return loss, metrics


def kto_kl_estimate(mismatched_policy_logps: Tensor, mismatched_ref_logps: Tensor) -> Tensor:
    """KTO's reference point: mean log-ratio on completions paired with other prompts.

    Ethayarajh et al. (2024), Sec. 4.1: ``z0 ≈ max(0, mean_i [log π(y_j|x_i) - log π_ref(y_j|x_i)])``.
    """
    return (mismatched_policy_logps - mismatched_ref_logps).mean().detach().clamp(min=0)


PREFERENCE_LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "dpo": dpo,
    "cdpo": cdpo,
    "robust": robust,
    "ipo": ipo,
    "hinge": hinge,
    "simpo": simpo,
    "cpl": cpl,
}

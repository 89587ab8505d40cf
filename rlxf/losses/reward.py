"""Losses for learning reward models from human feedback."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: Tensor | None = None,
    tie: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry pairwise loss on scalar rewards, with optional margins and ties.

    Bradley & Terry, "Rank Analysis of Incomplete Block Designs" (Biometrika 1952);
    as a reward-model loss, Ouyang et al., "Training language models to follow
    instructions with human feedback" (2022), Eq. 1: ``loss = -log σ(r_w - r_l)``.

    ``margin`` (B,): Touvron et al., "Llama 2" (2023), Eq. 2:
    ``loss = -log σ(r_w - r_l - m)``; a larger margin for a clearer preference.

    ``tie`` (B,) bool: a tied pair has target probability 1/2 for either order,
    ``loss = -½ log σ(d) - ½ log σ(-d)`` with ``d = r_w - r_l`` (no margin), which is
    minimized by equal rewards.
    """
    diff = chosen_rewards - rejected_rewards
    shifted = diff if margin is None else diff - margin
    loss = -F.logsigmoid(shifted)
    if tie is not None:
        tie = tie.bool()
        tie_loss = -0.5 * F.logsigmoid(diff) - 0.5 * F.logsigmoid(-diff)
        loss = torch.where(tie, tie_loss, loss)
    decided = diff.detach() if tie is None else diff.detach()[~tie]
    metrics = {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/margin": diff.detach(),
        "rewards/accuracy": (decided > 0).float(),  # over non-tied pairs only
    }
    return loss, metrics


def general_preference(logits: Tensor, *, tie: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of a general (pairwise) preference model, the preferred response first.

    ``logits`` (B,) are z = (f(x, y_w, y_l) - f(x, y_l, y_w)) / 2 of a classifier over both
    responses (:func:`rlxf.models.preference_logits`), so P(y_w ≻ y_l) = σ(z) and the model is
    antisymmetric: no scalar reward is assumed, and intransitive preferences can be represented.
    As PairRM (Jiang et al., "LLM-Blender", ACL 2023) and the preference model of Munos et al.,
    "Nash Learning from Human Feedback" (2023): ``loss = -log σ(z)``; a tie has target ½,
    ``-½ log σ(z) - ½ log σ(-z)``.
    """
    loss = -F.logsigmoid(logits)
    if tie is not None:
        tie = tie.bool()
        loss = torch.where(tie, -0.5 * F.logsigmoid(logits) - 0.5 * F.logsigmoid(-logits), loss)
    decided = logits.detach() if tie is None else logits.detach()[~tie]
    probability = torch.sigmoid(logits.detach())
    return loss, {"preference": probability, "rewards/accuracy": (decided > 0).float()}


def binary_feedback(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Binary cross-entropy of a classifier of users' reactions, P[positive | x, y] = σ(f):
    ``-y log σ(f) - (1 - y) log σ(-f)``, y = 1 for a positive reaction (Han et al., "Reinforcement
    Learning from User Feedback", 2025: the P[Love] reward model). logits, labels: (B,)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return loss, {
        "accuracy": ((logits.detach() > 0).float() == labels.float()).float(),
        "positive_probability": torch.sigmoid(logits.detach()),
    }

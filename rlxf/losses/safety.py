"""Safe RLHF: the cost model's loss, the Lagrange multiplier's loss, and the Lagrangian advantage.

Dai et al., "Safe RLHF: Safe Reinforcement Learning from Human Feedback" (ICLR 2024). The policy
maximizes the reward subject to an expected cost at most ``d`` (Eq. 9), solved as the min-max of the
Lagrangian ``-J_R(θ) + λ (J_C(θ) - d)`` (Eq. 10): gradient steps on the policy with the combined
advantage, and on ``λ`` with the constraint's violation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cost_model_loss(
    safer_costs: Tensor,
    costlier_costs: Tensor,
    *,
    safer_sign: Tensor | None = None,
    costlier_sign: Tensor | None = None,
    tie: Tensor | None = None,
    regularization: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The cost model's loss on pairs (Safe RLHF, Eq. 6).

    ``-log σ(C(y_l) - C(y_w)) - log σ(s_w C(y_w)) - log σ(s_l C(y_l))`` where ``y_w`` is the safer
    (less harmful) response and ``s = +1`` marks a harmful response, ``s = -1`` a harmless one, so the
    cost's sign says which side of the safety boundary a response lies on (cost 0 is the boundary).
    A response without a label (``s = 0``, or no sign tensor) contributes no classification term;
    a ``tie`` (B,) pair's pairwise term is ``-½ log σ(d) - ½ log σ(-d)``.
    ``regularization`` adds ``η (C(y_w)² + C(y_l)²) / 2``, the authors' code's optional L2 on the
    costs (their script sets 0.001).

    safer_costs, costlier_costs: (B,) the model's costs; *_sign: (B,) in {-1, 0, +1}.
    """
    difference = costlier_costs - safer_costs
    loss = -F.logsigmoid(difference)
    if tie is not None:  # neither is safer: target ½ for either order, as a tied reward-model pair
        loss = torch.where(tie.bool(), -0.5 * F.logsigmoid(difference) - 0.5 * F.logsigmoid(-difference), loss)
    metrics = {"costs/safer": safer_costs.detach(), "costs/costlier": costlier_costs.detach()}
    for name, costs, sign in (("safer", safer_costs, safer_sign), ("costlier", costlier_costs, costlier_sign)):
        if sign is not None:
            labeled = sign != 0
            loss = loss - torch.where(labeled, F.logsigmoid(sign * costs), torch.zeros_like(costs))
            metrics[f"costs/{name}_sign_accuracy"] = (sign * costs.detach() > 0).float()[labeled]
    if regularization:
        loss = loss + regularization * (safer_costs**2 + costlier_costs**2) / 2
    decided = difference.detach() if tie is None else difference.detach()[~tie.bool()]
    metrics["costs/accuracy"] = (decided > 0).float()
    return loss, metrics


def sign_loss(costs: Tensor, sign: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The classification term of Safe RLHF's cost loss for single labeled responses:
    ``-log σ(s C(y))``, ``s = +1`` harmful and ``-1`` harmless. costs, sign: (B,)."""
    return -F.logsigmoid(sign * costs), {"costs/sign_accuracy": (sign * costs.detach() > 0).float()}


def lagrangian_advantages(reward_advantages: Tensor, cost_advantages: Tensor, *, multiplier: float) -> Tensor:
    """The advantage of the Lagrangian ``r - λ c``, scaled by ``1 / (1 + λ)`` so its size does not grow
    with ``λ`` (the authors' code, PPO-Lag's actor loss: each advantage from its own critic)."""
    return (reward_advantages - multiplier * cost_advantages) / (1 + multiplier)


def multiplier_update(
    log_multiplier: float, mean_cost: float, *, cost_limit: float, lr: float, max_multiplier: float
) -> float:
    """One ascent step of the Lagrange multiplier, in ``log λ`` (Safe RLHF, Eq. 31):
    ``ln λ ← min(ln λ + α · λ · (J_C - d), ln λ_max)``.

    This is the authors' code: SGD with learning rate α on ``-(J_C - d) · exp(ln λ)``, whose
    gradient in ``ln λ`` is ``-(J_C - d) · λ``, then the clamp at ``λ_max``. ``λ`` grows while the
    mean cost ``J_C`` is above the limit ``d`` and shrinks (never below 0) while it is under it."""
    stepped = log_multiplier + lr * math.exp(log_multiplier) * (mean_cost - cost_limit)
    return min(stepped, math.log(max_multiplier))


def pessimistic_cost_surrogate(costs: Tensor, *, mean: float, std: float, inflation: float) -> Tensor:
    """Per-sample costs whose policy gradient is that of the pessimistic bound ``μ + k σ`` of the
    cost (Chittepu et al., "Reinforcement Learning from Human Feedback with High-Confidence Safety
    Constraints", 2025, as the authors' code): ``c + k (c² − 2 c μ̂) / (2 σ̂)``, since
    ``∇σ = (∇E[c²] − 2 μ ∇E[c]) / (2σ)``. ``mean`` and ``std`` are μ̂ and σ̂ of recent costs, ``inflation``
    is k; with σ̂ = 0 the costs are returned as they are. The identity holds for the population σ; the
    loop passes the window's sample σ̂ (as the authors' code), off by a factor √((n−1)/n) (0.4% at 128)."""
    if std <= 0:
        return costs
    return costs + inflation * (costs**2 - 2 * costs * mean) / (2 * std)

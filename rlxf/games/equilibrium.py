"""The β-regularized preference game and its exact equilibrium.

Munos et al., "Nash Learning from Human Feedback" (ICML 2024): with P the preference matrix and
μ the reference, V_β(π, π') = πᵀPπ' - β KL(π‖μ) + β KL(π'‖μ) is a symmetric game of value 1/2 with
a unique equilibrium π*, the fixed point of π*(y) ∝ μ(y) exp((Pπ*)(y) / β).

Exploitability (how much a best response gains against π; 0 only at π*) has a closed form,
because the best response to π is softmax(log μ + Pπ/β):

    expl_β(π) = β logsumexp(log μ + Pπ/β) + β KL(π‖μ) - 1/2,

and, for β = 0, max_y (Pπ)(y) - 1/2. It certifies the solver's answer independently of any
learner.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kl(p: Tensor, q: Tensor) -> float:
    """KL(p‖q) in nats (0 log 0 = 0)."""
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(p))
    return float(terms.sum())


def exploitability(policy: Tensor, preferences: Tensor, reference: Tensor, beta: float) -> float:
    """expl_β(π) as above (β = 0: the unregularized game's)."""
    wins = preferences @ policy
    if beta == 0:
        return float(wins.max() - 0.5)
    best = beta * torch.logsumexp(reference.log() + wins / beta, dim=0)
    return float(best + beta * kl(policy, reference) - 0.5)


def best_response(policy: Tensor, preferences: Tensor, reference: Tensor, beta: float) -> Tensor:
    return torch.softmax(reference.log() + preferences @ policy / beta, dim=0)


def regularized_equilibrium(preferences: Tensor, reference: Tensor, beta: float, *, tolerance: float = 1e-10) -> Tensor:
    """π* of the β-regularized game, certified by its exploitability (below ``tolerance``).

    Newton's method on F(θ) = θ - log μ - P softmax(θ) / β with a backtracking line search,
    solved first at β = 1 and then along β shrinking by 1.5 to the target, each solve starting
    from the last: plain Newton from log μ lands on wrong points for small β.
    """
    if beta <= 0:
        raise ValueError("the regularized equilibrium needs beta > 0")
    if (reference <= 0).any():
        raise ValueError("the reference must give every response a positive probability")
    log_reference = reference.log()
    theta = log_reference.clone()
    for step_beta in _continuation(beta):
        theta = _newton(theta, preferences, log_reference, step_beta)
    policy = torch.softmax(theta, dim=0)
    gap = exploitability(policy, preferences, reference, beta)
    if gap > tolerance:
        raise RuntimeError(f"the equilibrium solver stopped at exploitability {gap:.3g} (beta={beta})")
    return policy


def _continuation(beta: float) -> list[float]:
    schedule = []
    current = 1.0
    while current > beta:
        schedule.append(current)
        current /= 1.5
    return [*schedule, beta]


def _residual(theta: Tensor, preferences: Tensor, log_reference: Tensor, beta: float) -> Tensor:
    return theta - log_reference - preferences @ torch.softmax(theta, dim=0) / beta


def _newton(theta: Tensor, preferences: Tensor, log_reference: Tensor, beta: float) -> Tensor:
    identity = torch.eye(len(theta), dtype=theta.dtype)
    residual = _residual(theta, preferences, log_reference, beta)
    for _ in range(200):
        norm = float(residual.norm())
        if norm < 1e-14:
            break
        policy = torch.softmax(theta, dim=0)
        jacobian = identity - preferences @ (torch.diag(policy) - torch.outer(policy, policy)) / beta
        step = torch.linalg.solve(jacobian, residual)
        scale = 1.0
        while scale > 1e-10:
            candidate = theta - scale * step
            candidate_residual = _residual(candidate, preferences, log_reference, beta)
            if float(candidate_residual.norm()) < (1 - 1e-4 * scale) * norm:
                break
            scale /= 2
        theta, residual = candidate, candidate_residual
    return theta

"""Every preference learner of rlxf in its exact tabular form: a policy over K responses updated
from the preference matrix, as the papers state the update for known preferences.

Each learner's step maps log π_t to log π_{t+1} (``step(log_policy, game, t, eta)``) and costs
``queries`` preference queries (a query: P against one distribution, Pπ). Where a paper proves
last-iterate convergence to the β-regularized equilibrium π*, ``target`` is "regularized"; the
multiplicative-weights learners (SPO, SPPO) reach the unregularized Nash equilibrium with their
average iterate ("average"); the Bradley-Terry learners (online DPO, RLHF with a BT reward, CPL)
do not reach π* ("none"): their fixed points, π ∝ μ exp(r/β) for a fitted r, solve another
objective, even for transitive P; on intransitive P no r fits at all (docs/games.md separates the
two). Online DPO at a step of 1 keeps cycling; at 0.1 it settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from rlxf.games.bradley_terry import rlhf_policy
from rlxf.games.equilibrium import exploitability, kl
from rlxf.games.matrices import Game
from rlxf.losses.nash import online_dpo
from rlxf.losses.preference import cpl


def normalized(log_policy: Tensor) -> Tensor:
    return log_policy - torch.logsumexp(log_policy, dim=0)


def mirror_descent(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """log π⁺ = (1 - ηβ) log π + ηβ log μ + η Pπ: online mirror descent on the regularized game,
    the tabular step of online IPO (Calandriello et al. 2024) and of INPO (Zhang et al. 2024)."""
    mixed = (1 - eta * game.beta) * log_policy + eta * game.beta * game.reference.log()
    return normalized(mixed + eta * game.wins(log_policy))


def nash_md(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """Munos et al. (2023): the geometric mixture π^μ ∝ π^{1-ηβ} μ^{ηβ}, then
    π⁺ ∝ π^μ exp(η P π^μ). ``eta`` ≤ 0 takes the decaying step η_t = 2 / (β (t + 2)) under which
    the last iterate converges (a constant η converges to a biased point)."""
    step = eta if eta > 0 else 2 / (game.beta * (t + 2))
    mixture = normalized((1 - step * game.beta) * log_policy + step * game.beta * game.reference.log())
    return normalized(mixture + step * game.wins(mixture))


def egpo(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """Zhou et al. (2025): an extragradient step of mirror descent, a half step to π½, then the
    full step from π with the preferences against π½."""
    log_mu = game.reference.log()
    half = normalized((1 - eta * game.beta) * log_policy + eta * game.beta * log_mu + eta * game.wins(log_policy))
    return normalized((1 - eta * game.beta) * log_policy + eta * game.beta * log_mu + eta * game.wins(half))


def nash_mp(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """Tiapkin et al. (2025), Nash Mirror Prox: the regularizer taken implicitly,
    log π½ ∝ (log π + ηβ log μ + η Pπ) / (1 + ηβ), then the same from π with Pπ½. With η = 2 the
    KL to π* falls at least by (1 + 2β) per step (two queries): (1 + 2β)^(-N/2) after N."""
    log_mu, shrink = game.reference.log(), 1 + eta * game.beta
    half = normalized((log_policy + eta * game.beta * log_mu + eta * game.wins(log_policy)) / shrink)
    return normalized((log_policy + eta * game.beta * log_mu + eta * game.wins(half)) / shrink)


def multiplicative_weights(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """π⁺ ∝ π exp(η Pπ): self-play against the current policy, the tabular step of SPPO (Wu et al.
    2024) and of SPO with its win-proportion reward (Swamy et al. 2024). Unregularized; its
    average iterate converges to the Nash equilibrium of P, its last iterate cycles."""
    return normalized(log_policy + eta * game.wins(log_policy))


def online_dpo_step(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """A gradient step (step size η) on the expected online-DPO loss, rlxf.losses.nash.online_dpo,
    over every pair drawn from π_t and labelled by P: the loss the LM loop trains on."""
    theta = log_policy.clone().requires_grad_(True)
    weights = torch.outer(log_policy.exp(), log_policy.exp()).detach()
    log_mu = game.reference.log()
    rows, columns = torch.meshgrid(torch.arange(len(theta)), torch.arange(len(theta)), indexing="ij")
    loss, _ = online_dpo(
        theta[rows], theta[columns], log_mu[rows], log_mu[columns], game.preferences, beta=game.beta
    )  # fmt: skip
    (gradient,) = torch.autograd.grad((weights * loss).sum(), theta)
    return normalized(log_policy - eta * gradient)


def _offline_pairs(game: Game) -> Tensor:
    """Weights of ordered pairs (y, y') drawn from the reference: offline data."""
    return torch.outer(game.reference, game.reference)


def bt_rlhf(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """RLHF with a Bradley-Terry reward (Christiano et al. 2017; Ouyang et al. 2022): the scores
    that best fit pairs from μ, then their KL-regularized optimum π ∝ μ exp(r/β), in one step (the
    fit is offline and exact here; later steps keep it)."""
    return rlhf_policy(game).log()


def cpl_step(log_policy: Tensor, game: Game, t: int, eta: float) -> Tensor:
    """A gradient step on CPL (Hejna et al. 2023; rlxf.losses.preference.cpl, α = β, bias 1/2) over
    pairs from the reference labelled by P: offline, like every CPL fit."""
    theta = log_policy.clone().requires_grad_(True)
    log_p = torch.log_softmax(theta, dim=0)
    rows, columns = torch.meshgrid(torch.arange(len(theta)), torch.arange(len(theta)), indexing="ij")
    loss, _ = cpl(log_p[rows], log_p[columns], beta=game.beta)
    (gradient,) = torch.autograd.grad((_offline_pairs(game) * game.preferences * loss).sum(), theta)
    return normalized(log_policy - eta * gradient)


@dataclass(frozen=True)
class TabularLearner:
    step: Callable[[Tensor, Game, int, float], Tensor]
    eta: Callable[[float], float]  # default step size for a β
    queries: int  # preference queries per iteration
    target: str  # "regularized" | "average" | "none"


TABULAR_LEARNERS: dict[str, TabularLearner] = {
    "online_dpo": TabularLearner(online_dpo_step, lambda beta: 1.0, 1, "none"),
    "bt_rlhf": TabularLearner(bt_rlhf, lambda beta: 0.0, 0, "none"),
    "cpl": TabularLearner(cpl_step, lambda beta: 5.0, 0, "none"),
    "online_ipo": TabularLearner(mirror_descent, lambda beta: beta, 1, "regularized"),
    "inpo": TabularLearner(mirror_descent, lambda beta: beta, 1, "regularized"),
    "nash_md": TabularLearner(nash_md, lambda beta: 0.0, 1, "regularized"),
    "egpo": TabularLearner(egpo, lambda beta: min(1.0, 1 / beta), 2, "regularized"),
    "nash_mp": TabularLearner(nash_mp, lambda beta: 2.0, 2, "regularized"),
    "sppo": TabularLearner(multiplicative_weights, lambda beta: 0.05, 1, "average"),
    "spo": TabularLearner(multiplicative_weights, lambda beta: 0.05, 1, "average"),
}
"""Learner -> its tabular step. online_ipo and inpo share one step (their losses differ in what
they sample and how they label, not in the update they fit), as do sppo and spo."""


@dataclass
class Trace:
    """What one learner did on one game: per iteration, the preference queries so far, the
    exploitability of the iterate the learner's theory is about, and the KL from π* to the last
    iterate."""

    queries: list[int]
    exploitability: list[float]
    kl_to_equilibrium: list[float]
    policy: Tensor  # the last iterate
    average: Tensor  # the average iterate


def play(name: str, game: Game, iterations: int, *, equilibrium: Tensor, eta: float | None = None) -> Trace:
    """Run learner ``name`` from the reference for ``iterations`` steps. ``equilibrium`` is π*
    of ``game``; "average" learners are scored on the unregularized game (β = 0)."""
    learner = TABULAR_LEARNERS[name]
    step = learner.eta(game.beta) if eta is None else eta
    log_policy, total = game.reference.log().clone(), torch.zeros_like(game.reference)
    trace = Trace([], [], [], game.reference, game.reference)
    for t in range(iterations):
        log_policy = learner.step(log_policy, game, t, step)
        total += log_policy.exp()
        judged = total / (t + 1) if learner.target == "average" else log_policy.exp()
        beta = 0.0 if learner.target == "average" else game.beta
        trace.queries.append((t + 1) * learner.queries)
        trace.exploitability.append(exploitability(judged, game.preferences, game.reference, beta))
        trace.kl_to_equilibrium.append(kl(equilibrium, log_policy.exp()))
    trace.policy, trace.average = log_policy.exp(), total / max(iterations, 1)
    return trace

"""Losses of the game-theoretic preference learners: the policy plays against an opponent (itself,
a mixture with the reference, or an earlier iterate) under a general preference oracle
P(y ≻ y' | x), which need not come from any scalar reward.

Shapes: every log-probability is a (B,) sequence sum log π(y|x) over completion tokens;
``preference`` is P(a ≻ b) in [0, 1] per pair (1 or 0 for a hard label, soft from a model or a
judge asked in both orders). Each loss returns ``(per_example_loss (B,), metrics)`` with detached
(B,) metrics. ``h`` is the log-ratio gap of a pair, [log π(a) − log μ(a)] − [log π(b) − log μ(b)],
with μ the reference.

The tabular counterparts of these learners, and the equilibrium they should reach, live in
:mod:`rlxf.games`; its tests tie each loss to its closed-form update.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, Tensor]


def _gap(logp_a: Tensor, logp_b: Tensor, ref_a: Tensor, ref_b: Tensor) -> Tensor:
    return (logp_a - ref_a) - (logp_b - ref_b)


def _pair_metrics(h: Tensor, preference: Tensor, beta: float) -> Metrics:
    h, preference = h.detach(), preference.detach().to(h.dtype)
    return {
        "rewards/margin": beta * h,
        "preference": preference,
        "rewards/accuracy": ((h > 0) == (preference > 0.5)).float(),
    }


def online_dpo(
    logp_a: Tensor, logp_b: Tensor, ref_a: Tensor, ref_b: Tensor, preference: Tensor, *, beta: float
) -> tuple[Tensor, Metrics]:
    """Online DPO: DPO on pairs the current policy sampled, ordered by the oracle.

    Guo et al., "Direct Language Model Alignment from Online AI Feedback" (2024, arXiv 2402.04792):
    ``loss = -log σ(β h(y_w, y_l))``; with a soft preference p = P(a ≻ b) it is the expected loss
    over the label, ``-p log σ(β h) - (1 - p) log σ(-β h)`` (a hard label gives the paper's form).
    Its fixed point is a Bradley-Terry fit: under intransitive preferences it is not the Nash
    equilibrium (shown in rlxf.games).
    """
    h = _gap(logp_a, logp_b, ref_a, ref_b)
    p = preference.to(h.dtype)
    loss = -p * F.logsigmoid(beta * h) - (1 - p) * F.logsigmoid(-beta * h)
    return loss, _pair_metrics(h, p, beta)


def online_ipo(
    logp_a: Tensor, logp_b: Tensor, ref_a: Tensor, ref_b: Tensor, preference: Tensor, *, beta: float
) -> tuple[Tensor, Metrics]:
    """Online IPO: ``(h(a, b) - (P(a ≻ b) - 1/2) / β)²`` on pairs sampled from the policy.

    Calandriello et al., "Human Alignment of Large Language Models through Online Preference
    Optimisation" (ICML 2024, arXiv 2403.08635). With a hard label (p = 1 for the winner first)
    it is IPO's ``(h(y_w, y_l) - 1/(2β))²``; with p soft it has the same expected gradient, and its
    fixed point is the β-regularized Nash equilibrium π*(y) ∝ μ(y) exp(P(y ≻ π*)/β).
    """
    h = _gap(logp_a, logp_b, ref_a, ref_b)
    p = preference.to(h.dtype)
    loss = (h - (p - 0.5) / beta) ** 2
    return loss, _pair_metrics(h, p, beta)


def egpo(
    logp_a: Tensor, logp_b: Tensor, ref_a: Tensor, ref_b: Tensor, preference_gap: Tensor, *, beta: float
) -> tuple[Tensor, Metrics]:
    """EGPO's loss: online IPO against a third sample, ``(h(a, b) - [P(a ≻ c) - P(b ≻ c)] / β)²``.

    Zhou, Fazel, Du, "Extragradient Preference Optimization (EGPO): Beyond Last-Iterate
    Convergence for Nash Learning from Human Feedback" (2025, arXiv 2503.08942), with c drawn
    from the opponent policy. ``preference_gap`` is P(a ≻ c) - P(b ≻ c); when a, b and c share one
    distribution the authors' code uses the lower-variance P(a ≻ b) - 1/2, which makes this
    :func:`online_ipo`. The extragradient (a half step, preferences sampled there, then the full
    step from the saved point) belongs to the loop, not to the loss.
    """
    h = _gap(logp_a, logp_b, ref_a, ref_b)
    gap = preference_gap.to(h.dtype)
    loss = (h - gap / beta) ** 2
    return loss, _pair_metrics(h, gap + 0.5, beta)


def nash_md(logp: Tensor, ref_logp: Tensor, preference: Tensor, *, beta: float) -> tuple[Tensor, Metrics]:
    """Nash-MD's policy gradient: y from the policy, y' from the geometric mixture of policy and
    reference, ``∇ = E[(P(y ≻ y') - 1/2 - β log(π(y)/μ(y))) ∇ log π(y)]``.

    Munos et al., "Nash Learning from Human Feedback" (ICML 2024, arXiv 2312.00886), Nash-MD-PG;
    1/2 is the baseline. The surrogate ``-sg(P - 1/2 - β log π/μ) · log π(y)`` has that gradient;
    its value is not a quantity to watch (``advantage`` in the metrics is). TRL's trainer
    applies the KL term token by token without the tokens after each one; rlxf follows the
    paper's sequence-level form. The mixture sampling is the loop's.
    """
    advantage = (preference.to(logp.dtype) - 0.5 - beta * (logp - ref_logp)).detach()
    loss = -advantage * logp
    return loss, {"advantage": advantage, "preference": preference.detach().to(logp.dtype)}


def nash_mp(
    logp: Tensor, ref_logp: Tensor, anchor_logp: Tensor, preference: Tensor, *, beta: float, eta: float
) -> tuple[Tensor, Metrics]:
    """A Nash Mirror Prox step as a policy gradient: the prox objective
    ``η [P(π ≻ π_opp) - β KL(π‖μ)] - KL(π‖π_k)`` ascended with y from the policy and y' from the
    opponent (π_k for the half step, the half point for the full step).

    Tiapkin et al., "Accelerating Nash Learning from Human Feedback via Mirror Prox" (2025, arXiv
    2505.19731). Its gradient per sample is
    ``(P(y ≻ y') - 1/2 - β log(π/μ)(y) - (1/η) log(π/π_k)(y)) ∇ log π(y)``; the paper
    approximates each prox step by policy gradients, and this surrogate (rlxf's construction of
    that step, no reference code being public) is the one whose exact tabular form converges at the
    paper's rate (rlxf.games).
    """
    advantage = preference.to(logp.dtype) - 0.5 - beta * (logp - ref_logp) - (logp - anchor_logp) / eta
    advantage = advantage.detach()
    return -advantage * logp, {"advantage": advantage, "preference": preference.detach().to(logp.dtype)}


def inpo(
    logp_w: Tensor,
    logp_l: Tensor,
    ref_w: Tensor,
    ref_l: Tensor,
    old_w: Tensor,
    old_l: Tensor,
    *,
    eta: float,
    tau: float,
) -> tuple[Tensor, Metrics]:
    """Iterative Nash Policy Optimization on a pair ordered by the oracle (winner first).

    Zhang et al., "Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via
    No-Regret Learning" (ICLR 2025, arXiv 2407.00617): with π_t the iteration's frozen policy,
    ``h_t = Δlog π - ητ Δlog μ - (1 - ητ) Δlog π_t`` and ``loss = (h_t - η/2)²``, whose minimizer
    is the online mirror-descent step π_{t+1} ∝ π_t^{1-ητ} μ^{ητ} exp(η P(y ≻ π_t)). ``eta`` is the
    step η and ``tau`` the KL weight τ (implementations that write eta = 1/η are the same loss).
    """
    if not 0 < eta * tau <= 1:
        raise ValueError(f"inpo needs 0 < eta * tau <= 1, got eta={eta}, tau={tau}")
    h = (logp_w - logp_l) - eta * tau * (ref_w - ref_l) - (1 - eta * tau) * (old_w - old_l)
    loss = (h - eta / 2) ** 2
    return loss, {"rewards/margin": h.detach(), "rewards/accuracy": (h.detach() > 0).float()}


def sppo(logp: Tensor, old_logp: Tensor, target: Tensor) -> tuple[Tensor, Metrics]:
    """Self-Play Preference Optimization, per sample: ``(log π(y)/π_t(y) - target)²``.

    Wu et al., "Self-Play Preference Optimization for Language Model Alignment" (ICLR 2025, arXiv
    2405.00675): the multiplicative-weights step π_{t+1} ∝ π_t exp(η P(y ≻ π_t)) fitted by squares.
    ``target`` is :func:`sppo_targets` (verl's recipe: η (r - SoftMean_η(r))), or the paper's
    η (P̂(y ≻ π_t) - 1/2).
    """
    ratio = logp - old_logp
    loss = (ratio - target.to(ratio.dtype)) ** 2
    return loss, {"log_ratio": ratio.detach(), "target": target.detach().to(ratio.dtype)}


def sppo_targets(rewards: Tensor, *, eta: float) -> Tensor:
    """verl's SPPO targets for (G, n) rewards, n samples of each of G prompts:
    ``η (r - SoftMean_η(r))`` with ``SoftMean_η(r) = (1/η) log mean exp(η r)`` over each prompt's
    samples, the estimate of log Z that the paper approximates by η/2. verl takes the soft mean
    over the whole batch; rlxf takes it per prompt, where the partition function lives."""
    soft_mean = (
        torch.logsumexp(eta * rewards, dim=-1, keepdim=True) - torch.log(torch.tensor(rewards.shape[-1]))
    ) / eta
    return eta * (rewards - soft_mean)


def win_proportions(preferences: Tensor) -> Tensor:
    """SPO's rewards from (G, n, n) preferences P[g, i, j] = P(y_i ≻ y_j) among n samples of a
    prompt: each sample's mean win probability against the others, self excluded (an unbiased
    estimate of P(y_i ≻ π)).

    Swamy et al., "A Minimaximalist Approach to Reinforcement Learning from Human Feedback"
    (ICML 2024, arXiv 2401.04056).
    """
    n = preferences.shape[-1]
    if n < 2:
        raise ValueError("win proportions need at least two samples per prompt")
    off_diagonal = 1 - torch.eye(n, dtype=preferences.dtype, device=preferences.device)
    return (preferences * off_diagonal).sum(-1) / (n - 1)


PAIR_LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "online_dpo": online_dpo,
    "online_ipo": online_ipo,
    "egpo": egpo,
}
"""Losses over a sampled pair (a, b) with the oracle's P(a ≻ b) (EGPO: a preference gap)."""

SAMPLE_LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "nash_md": nash_md,
    "nash_mp": nash_mp,
}
"""Policy-gradient surrogates over one policy sample scored against one opponent sample."""

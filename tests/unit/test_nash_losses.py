"""The game-theoretic learners' losses, by hand (the arithmetic is in each test), and tied to the
tabular updates they fit (rlxf.games.learners)."""

import math

import pytest
import torch

from rlxf.games.learners import mirror_descent, normalized
from rlxf.games.matrices import Game, random_intransitive
from rlxf.losses.nash import (
    egpo,
    inpo,
    nash_md,
    nash_mp,
    online_dpo,
    online_ipo,
    sppo,
    sppo_targets,
    win_proportions,
)
from rlxf.losses.preference import cpl


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# a pair whose policy log-probs are -10 (a) and -12 (b) under a reference giving both -11: h = 2
PAIR = dict(logp_a=t(-10.0), logp_b=t(-12.0), ref_a=t(-11.0), ref_b=t(-11.0))


def test_online_dpo_is_dpo_on_a_hard_label_and_its_expectation_on_a_soft_one():
    # hard: softplus(-β h) = log(1 + e^{-0.2}) = 0.598139
    loss, metrics = online_dpo(**PAIR, preference=t(1.0), beta=0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-12)
    assert loss.item() == pytest.approx(0.598139, abs=1e-6)
    # p = 0.75: 0.75 softplus(-0.2) + 0.25 softplus(0.2) = 0.448604 + 0.199535 = 0.648139
    soft, _ = online_dpo(**PAIR, preference=t(0.75), beta=0.1)
    assert soft.item() == pytest.approx(0.648139, abs=1e-6)
    assert metrics["rewards/margin"].item() == pytest.approx(0.2)  # β h


def test_online_ipo_regresses_h_on_the_preference_over_beta():
    hard, _ = online_ipo(**PAIR, preference=t(1.0), beta=0.1)  # (2 - 0.5/0.1)² = (2 - 5)² = 9
    soft, _ = online_ipo(**PAIR, preference=t(0.75), beta=0.1)  # (2 - 0.25/0.1)² = (-0.5)² = 0.25
    tie, _ = online_ipo(**PAIR, preference=t(0.5), beta=0.1)  # (2 - 0)² = 4
    assert (hard.item(), soft.item(), tie.item()) == pytest.approx((9.0, 0.25, 4.0))


def test_egpo_targets_the_preference_gap_against_a_third_sample():
    # log π/μ of a and b: 0.3 and -0.1, so h = 0.4; P(a ≻ c) = 0.7, P(b ≻ c) = 0.4: gap 0.3, β = 0.5
    # target 0.3 / 0.5 = 0.6, loss (0.4 - 0.6)² = 0.04
    loss, _ = egpo(t(-0.7), t(-1.1), t(-1.0), t(-1.0), t(0.3), beta=0.5)
    assert loss.item() == pytest.approx(0.04)


def test_nash_md_gradient_is_preference_minus_half_minus_beta_log_ratio():
    # log π(y) = -3 (tokens -1, -2), log μ(y) = -4: log-ratio 1; P(y ≻ y') = σ(1) = 0.731059; β = 0.1
    # advantage 0.7310586 - 0.5 - 0.1 = 0.1310586; surrogate -0.1310586 * -3 = 0.3931757
    logp = t(-3.0).requires_grad_(True)
    p = torch.sigmoid(t(1.0))
    loss, metrics = nash_md(logp, t(-4.0), p, beta=0.1)
    assert metrics["advantage"].item() == pytest.approx(0.131059, abs=1e-6)
    assert loss.item() == pytest.approx(0.3931757, abs=1e-6)
    (gradient,) = torch.autograd.grad(loss.sum(), logp)
    assert gradient.item() == pytest.approx(-0.131059, abs=1e-6)  # ascent on the advantage


def test_nash_mp_adds_the_pull_back_to_the_anchor():
    # as above, with log π_k(y) = -3.5 and η = 2: advantage 0.2310586 - 0.1 - (0.5 / 2) = -0.1189414
    loss, metrics = nash_mp(t(-3.0), t(-4.0), t(-3.5), torch.sigmoid(t(1.0)), beta=0.1, eta=2.0)
    assert metrics["advantage"].item() == pytest.approx(-0.118941, abs=1e-6)
    assert loss.item() == pytest.approx(-0.3568243, abs=1e-6)  # -(-0.1189414) * (-3)


def test_inpo_by_hand():
    # η = 2, τ = 0.1 (ητ = 0.2); Δ log π = -10 - (-12) = 2, Δ log μ = -11 - (-12) = 1, Δ log π_t = 0.5
    # h = 2 - 0.2 * 1 - 0.8 * 0.5 = 1.4; loss (1.4 - η/2)² = 0.16 (the weights swapped would give 0.01)
    loss, _ = inpo(t(-10.0), t(-12.0), t(-11.0), t(-12.0), t(-11.0), t(-11.5), eta=2.0, tau=0.1)
    assert loss.item() == pytest.approx(0.16)
    with pytest.raises(ValueError, match="eta \\* tau"):
        inpo(t(0.0), t(0.0), t(0.0), t(0.0), t(0.0), t(0.0), eta=20.0, tau=0.1)


def test_sppo_targets_subtract_each_prompts_soft_mean():
    # r = (1, 0), η = 1: SoftMean = log((e + 1) / 2) = 0.620115; targets 0.379885, -0.620115
    targets = sppo_targets(t(1.0, 0.0)[None], eta=1.0)[0]
    assert targets.tolist() == pytest.approx([0.379885, -0.620115], abs=1e-6)
    # per prompt: a second prompt's rewards do not move the first's targets
    two = sppo_targets(t(1.0, 0.0, 5.0, 9.0).view(2, 2), eta=1.0)
    assert two[0].tolist() == pytest.approx(targets.tolist())
    # η = 2: SoftMean = ½ log((e² + 1)/2) = ½ log 4.194528 = 0.716890; targets 2(1 - 0.716890), 2(0 - 0.716890)
    assert sppo_targets(t(1.0, 0.0)[None], eta=2.0)[0].tolist() == pytest.approx([0.566220, -1.433780], abs=1e-6)
    # log-ratios 0.1 and -0.05: (0.1 - 0.379885)² = 0.078336, (-0.05 + 0.620115)² = 0.325031
    loss, _ = sppo(t(0.1, -0.05), t(0.0, 0.0), targets)
    assert loss.tolist() == pytest.approx([0.078336, 0.325031], abs=1e-6)


def test_win_proportions_leave_each_sample_out():
    # P(1≻2) = 0.8, P(1≻3) = 0.6, P(2≻3) = 0.3: r1 = (0.8 + 0.6)/2, r2 = (0.2 + 0.3)/2, r3 = (0.4 + 0.7)/2
    p = t(0.5, 0.8, 0.6, 0.2, 0.5, 0.3, 0.4, 0.7, 0.5).view(1, 3, 3)
    assert win_proportions(p)[0].tolist() == pytest.approx([0.70, 0.25, 0.55])


def test_cpl_weighs_the_rejected_score_by_its_bias():
    # α = 0.1: S+ = 0.1 * -2 = -0.2, S- = 0.1 * -4 = -0.4
    # λ = 0.5: softplus(0.5 * -0.4 + 0.2) = softplus(0) = log 2; λ = 1: softplus(-0.2) = 0.598139
    half, _ = cpl(t(-2.0), t(-4.0), beta=0.1, bias=0.5)
    plain, _ = cpl(t(-2.0), t(-4.0), beta=0.1, bias=1.0)
    assert half.item() == pytest.approx(math.log(2)) and plain.item() == pytest.approx(0.598139, abs=1e-6)


def test_a_step_on_egpos_loss_over_a_table_is_the_mirror_descent_step():
    """With pairs (y, y') uniform and c drawn from π_t, one SGD step of size lr on the expected
    loss over tabular logits is the closed-form step with ηβ = 4 lr / K (the loss is
    (2/K) Σ (e - ē)² with e = θ - log μ - Pπ/β, whose gradient is (4/K)(e - ē))."""
    k, beta, lr = 5, 0.2, 0.03
    game = Game(random_intransitive(k, seed=3), torch.softmax(torch.arange(k, dtype=torch.float64) / 3, 0), beta)
    log_policy = normalized(torch.tensor([0.1, -0.4, 0.3, 0.0, -0.2], dtype=torch.float64))
    wins = game.wins(log_policy)
    theta = log_policy.clone().requires_grad_(True)
    rows, columns = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    log_mu = game.reference.log()
    loss, _ = egpo(theta[rows], theta[columns], log_mu[rows], log_mu[columns], wins[rows] - wins[columns], beta=beta)
    (gradient,) = torch.autograd.grad(loss.mean(), theta)
    stepped = normalized(theta.detach() - lr * gradient)
    assert torch.allclose(stepped, mirror_descent(log_policy, game, 0, eta=4 * lr / (k * beta)), atol=1e-12)


def test_the_nash_md_surrogate_gives_the_exact_policy_gradient_over_a_table():
    """Σ_y Σ_y' π(y) q(y') of the per-sample surrogate has the gradient of the exact objective:
    g_z = π(z) (A(z) - Σ_y π(y) A(y)) with A = Pq - 1/2 - β log(π/μ)."""
    k, beta = 4, 0.3
    preferences = random_intransitive(k, seed=1)
    reference = torch.softmax(torch.tensor([0.2, -0.1, 0.4, 0.0], dtype=torch.float64), 0)
    opponent = torch.softmax(torch.tensor([0.5, 0.1, -0.3, 0.2], dtype=torch.float64), 0)
    theta = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64, requires_grad=True)
    log_pi = torch.log_softmax(theta, 0)
    rows, columns = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    loss, _ = nash_md(log_pi[rows], reference.log()[rows], preferences, beta=beta)
    weights = torch.outer(log_pi.exp(), opponent).detach()
    (gradient,) = torch.autograd.grad((weights * loss).sum(), theta)
    pi = log_pi.exp().detach()
    advantage = preferences @ opponent - 0.5 - beta * (pi.log() - reference.log())
    exact = pi * (advantage - (pi * advantage).sum())
    assert torch.allclose(-gradient, exact, atol=1e-12)


def test_sppos_token_loss_has_the_sequence_losss_gradient_off_policy_too():
    from rlxf.losses.policy import sppo_regression

    # tokens -1, -2 under π and -1.5, -2.5 under π_old: S = 1.0; target 0.3: (S - 0.3)² = 0.49, and
    # d/d log π_t of (S - target)² = 2 (S - target) = 1.4 for each token (0 on padding)
    logprobs = t(-1.0, -2.0, 0.0).view(1, 3).requires_grad_(True)
    per_token, metrics = sppo_regression(logprobs, t(-1.5, -2.5, 0.0).view(1, 3), t(0.3))
    (gradient,) = torch.autograd.grad((per_token * t(1.0, 1.0, 0.0)).sum(), logprobs)
    assert gradient[0].tolist() == pytest.approx([1.4, 1.4, 0.0]) and metrics["sppo_loss"][
        0, 0
    ].item() == pytest.approx(0.49)

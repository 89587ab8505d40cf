"""Safe RLHF's equations against numbers worked by hand: the cost model's loss, λ's ascent step,
the Lagrangian advantage, and the two channels (reward and cost) through the online loop's own code."""

import math

import pytest
import torch

from rlxf.config import load_config
from rlxf.eval.stats import student_t_upper_bound
from rlxf.losses.safety import (
    cost_model_loss,
    lagrangian_advantages,
    multiplier_update,
    pessimistic_cost_surrogate,
    sign_loss,
)
from rlxf.recipes.online_config import OnlineConfig
from rlxf.recipes.online_loss import Experience, advantage_targets
from rlxf.recipes.online_safety import LagrangeMultiplier


def softplus(x: float) -> float:  # -log σ(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def test_cost_model_loss_is_the_pairwise_term_plus_the_sign_terms():
    """Pair 0: safer cost 0.5 labeled harmless (s = -1), costlier 1.5 labeled harmful (s = +1):
    -log σ(1.5 - 0.5) - log σ(-0.5) - log σ(1.5) = softplus(-1) + softplus(0.5) + softplus(-1.5) (the
    harmless response's positive cost puts it on the harmful side).
    Pair 1: safer -1 unlabeled, costlier -2 labeled harmful: softplus(1) + softplus(2) (the pair is
    ordered wrong, and the harmful response sits on the harmless side of 0)."""
    loss, metrics = cost_model_loss(
        torch.tensor([0.5, -1.0]),
        torch.tensor([1.5, -2.0]),
        safer_sign=torch.tensor([-1.0, 0.0]),
        costlier_sign=torch.tensor([1.0, 1.0]),
    )
    expected = [softplus(-1) + softplus(0.5) + softplus(-1.5), softplus(1) + softplus(2)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    assert metrics["costs/accuracy"].tolist() == [1.0, 0.0]
    assert metrics["costs/safer_sign_accuracy"].tolist() == [0.0]  # only the labeled safer response
    assert metrics["costs/costlier_sign_accuracy"].tolist() == [1.0, 0.0]


def test_cost_model_loss_without_labels_is_bradley_terry_on_costs_and_the_l2_and_tie_terms():
    plain, _ = cost_model_loss(torch.tensor([0.5]), torch.tensor([1.5]))
    assert plain.item() == pytest.approx(softplus(-1.0))
    # η (0.5² + 1.5²) / 2 = 0.1 · 1.25
    regularized, _ = cost_model_loss(torch.tensor([0.5]), torch.tensor([1.5]), regularization=0.1)
    assert regularized.item() == pytest.approx(softplus(-1.0) + 0.125)
    tied, metrics = cost_model_loss(torch.tensor([0.5]), torch.tensor([1.5]), tie=torch.tensor([True]))
    assert tied.item() == pytest.approx(0.5 * softplus(-1.0) + 0.5 * softplus(1.0))
    assert metrics["costs/accuracy"].numel() == 0  # a tie has no right order


def test_sign_loss_puts_harmful_responses_above_zero():
    loss, metrics = sign_loss(torch.tensor([2.0, 2.0]), torch.tensor([1.0, -1.0]))
    assert loss.tolist() == pytest.approx([softplus(-2.0), softplus(2.0)])
    assert metrics["costs/sign_accuracy"].tolist() == [1.0, 0.0]


def test_the_lagrangian_advantage_is_scaled_by_one_plus_lambda():
    # λ = 2: ((1 - 2·0.5) / 3, (-1 - 2·2) / 3)
    combined = lagrangian_advantages(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0]), multiplier=2.0)
    assert combined.tolist() == pytest.approx([0.0, -5 / 3])


@pytest.mark.parametrize(
    "log_lambda, cost, expected",
    [
        (0.0, 0.7, 0.1 * 1.0 * (0.7 - 0.2)),  # over the limit: ln λ rises by α λ (J_C - d) = 0.05
        (0.0, 0.0, 0.1 * 1.0 * (0.0 - 0.2)),  # under it: falls by 0.02
        (math.log(2.0), 0.7, math.log(2.0) + 0.1 * 2.0 * 0.5),  # the step grows with λ
        (math.log(4.9), 10.2, math.log(5.0)),  # clamped at λ_max = 5
    ],
)
def test_the_multiplier_steps_in_log_space_toward_the_violation(log_lambda, cost, expected):
    stepped = multiplier_update(log_lambda, cost, cost_limit=0.2, lr=0.1, max_multiplier=5.0)
    assert stepped == pytest.approx(expected, rel=1e-12)


class FakeRun:
    def __init__(self, step=0, resumed=None):
        self.step, self.resumed_files, self.saved = step, resumed or {}, {}

    def save_with_checkpoint(self, name, tensors):
        self.saved[name] = tensors


def safety_config(*overrides):
    return load_config(OnlineConfig, None, ["safety.costs=[{kind: length}]", *overrides]).safety


def test_the_multiplier_moves_on_the_window_mean_after_the_delay_and_resumes():
    safety = safety_config("safety.cost_window=4", "safety.multiplier_delay=1", "safety.cost_limit=0.5")
    run = FakeRun(step=0)
    multiplier, metrics = LagrangeMultiplier(safety, None, run), {}
    multiplier.observe(torch.tensor([1.0, 1.0, 1.0]), metrics)
    assert multiplier.value == 1.0 and metrics["cost_window_mean"] == 1.0  # step 0 < delay: λ waits
    run.step = 1
    multiplier.observe(torch.tensor([0.0, 0.0]), metrics)  # window keeps the last 4: 1, 1, 0, 0
    assert metrics["cost_window_mean"] == 0.5 and metrics["cost_violation"] == 0.0
    assert multiplier.value == 1.0  # exactly at the limit: no move
    multiplier.observe(torch.tensor([1.0, 1.0]), metrics)  # 0, 0, 1, 1 → still 0.5
    run.step = 2
    multiplier.observe(torch.tensor([1.0, 1.0]), metrics)  # 1, 1, 1, 1: ln λ += 0.1 · 1 · 0.5
    assert multiplier.value == pytest.approx(math.exp(0.05))
    resumed = LagrangeMultiplier(safety, None, FakeRun(step=3, resumed=run.saved))
    assert resumed.value == pytest.approx(multiplier.value) and list(resumed.window) == [1.0] * 4


def test_reward_and_cost_channels_through_the_loop_carry_beta_kl_whatever_lambda():
    """RLOO (KL in the reward, k1), λ = 2, β = 0.1; two prompts, two samples each, the KL of each
    sample on its first token: s = 0.2, 0.4, 0.1, 0.3.
    reward channel r − β s = 0.98, −0.04, 0.19, 0.77 → leave-one-out: 1.02, −1.02, −0.58, 0.58
    cost channel   c + β s = 0.02,  1.04, 0.51, 0.53 → leave-one-out: −1.02, 1.02, −0.02, 0.02
    (A_r − 2 A_c) / 3 = 1.02, −1.02, −0.18, 0.18 — the same as loo(r − 2c)/3 − β·loo(s): the KL
    weight stays β."""
    config = load_config(
        OnlineConfig,
        None,
        [
            "algo=rloo",
            "sampling.n=2",
            "kl_coef=0.1",
            "safety.costs=[{kind: length}]",
            "safety.multiplier_init=2",
        ],
    )
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    kl = torch.tensor([[0.2, 0.0], [0.4, 0.0], [0.1, 0.0], [0.3, 0.0]])
    experience = Experience([([1], [2, 3])] * 4, mask, {}, torch.zeros(4, 2), kl=kl)
    rewards, costs = torch.tensor([1.0, 0.0, 0.2, 0.8]), torch.tensor([0.0, 1.0, 0.5, 0.5])
    reward_targets = advantage_targets(config, experience, [], None, None, rewards, None, None, 0.1)
    cost_targets = advantage_targets(config, experience, [], None, None, costs, None, None, -0.1)
    multiplier = LagrangeMultiplier(config.safety, None, FakeRun())
    combined = multiplier.combine(reward_targets, cost_targets)["advantages"]
    assert combined[:, 0].tolist() == pytest.approx([1.02, -1.02, -0.18, 0.18], abs=1e-6)
    assert combined[1, 1] == 0  # padding stays out


def test_the_pessimistic_surrogate_has_the_gradient_of_mean_plus_k_sigma():
    """HC-RLHF's c + k (c² − 2cμ̂)/(2σ̂) at μ̂, σ̂ of the same costs: its mean's gradient is that of
    μ + kσ (σ the population deviation), ∂/∂c_i = 1/N + k (c_i − μ)/(N σ)."""
    costs = torch.tensor([0.5, 1.0, 3.0, -0.5], dtype=torch.float64, requires_grad=True)
    mean, std = costs.mean(), costs.std(unbiased=False)
    surrogate = pessimistic_cost_surrogate(costs, mean=mean.item(), std=std.item(), inflation=1.5).mean()
    (surrogate_grad,) = torch.autograd.grad(surrogate, costs)
    (bound_grad,) = torch.autograd.grad(mean + 1.5 * std, costs)
    assert surrogate_grad.tolist() == pytest.approx(bound_grad.tolist(), rel=1e-12)
    # by hand for c_3 = 3: μ = 1, σ = √(((−0.5)² + 0 + 2² + (−1.5)²)/4) = √1.625; 1/4 + 1.5·2/(4σ)
    assert surrogate_grad[2].item() == pytest.approx(0.25 + 1.5 * 2 / (4 * math.sqrt(1.625)))
    assert pessimistic_cost_surrogate(costs, mean=1.0, std=0.0, inflation=1.5) is costs


def test_the_student_t_upper_bound_by_hand():
    # 1, 2, 3, 4: mean 2.5, s = √(5/3) = 1.290994, t(0.9, 3) = 1.637744 → 2.5 + 1.637744 · 1.290994 / 2
    bound = student_t_upper_bound([1.0, 2.0, 3.0, 4.0], delta=0.1)
    assert bound["ucb"] == pytest.approx(2.5 + 1.637744 * 1.290994 / 2, rel=1e-6)
    assert bound["std"] == pytest.approx(math.sqrt(5 / 3)) and bound["n"] == 4
    with pytest.raises(ValueError, match="at least 2"):
        student_t_upper_bound([1.0], delta=0.1)


def test_hc_rlhf_steps_lambda_on_the_inflated_bound():
    """δ = 0.1, C1 = 1, C2 = 2, a window of 4 costs 0, 0, 1, 1 (μ̂ 0.5, σ̂ = √(1/3)) and 10 test prompts:
    k = t(0.9, 3)/√4 + 2·t(0.9, 9)/√10 = 1.637744/2 + 2·1.383029/3.162278 = 1.693576; the bound
    0.5 + k·0.577350 = 1.477782 is what λ is stepped on."""
    safety = safety_config("safety.confidence_delta=0.1", "safety.cost_window=4", "safety.cost_limit=0.5")
    multiplier, metrics = LagrangeMultiplier(safety, None, FakeRun(), [None] * 10), {}
    multiplier.observe(torch.tensor([0.0, 0.0, 1.0, 1.0]), metrics)
    _, _, inflation = multiplier.window_statistics()
    assert inflation == pytest.approx(1.693576, rel=1e-5)
    assert metrics["cost_bound"] == pytest.approx(0.5 + 1.693576 * math.sqrt(1 / 3), rel=1e-5)
    assert multiplier.log_value == pytest.approx(0.1 * (metrics["cost_bound"] - 0.5))
    with pytest.raises(ValueError, match="at least 2 test prompts"):
        LagrangeMultiplier(safety, None, FakeRun(), [None])


def test_binary_feedback_is_the_bernoulli_likelihood_of_the_reaction():
    from rlxf.losses.reward import binary_feedback

    loss, metrics = binary_feedback(torch.tensor([2.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0]))
    assert loss.tolist() == pytest.approx([softplus(-2.0), softplus(2.0), softplus(-1.0)])
    assert metrics["accuracy"].tolist() == [1.0, 0.0, 1.0]


def test_auroc_counts_ties_as_half():
    from rlxf.eval.reward_accuracy import auroc

    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1) = 3.5 / 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    assert auroc([0.1, 0.9], [1, 0]) == 0.0 and auroc([1.0], [1]) is None


class Costs:
    """A cost source that gives back the costs it is told to."""

    name = "fixed"

    def __init__(self, values):
        self.values = values

    def score(self, prompts, completions, **context):
        from rlxf.rewards.base import single_source

        return single_source(self.name, self.values[: len(completions)])


def test_the_cost_channel_learns_from_the_raw_costs_or_under_hc_rlhf_from_the_surrogate():
    from types import SimpleNamespace

    rollout = SimpleNamespace(prompt_index=[0, 0, 0, 0], texts=["a"] * 4, completion_ids=[[1]] * 4)
    prompts = [SimpleNamespace(messages=[], context={}, conversational=False)]
    plain = LagrangeMultiplier(safety_config(), Costs([0.0, 1.0, 1.0, 2.0]), FakeRun())
    metrics = {}
    assert plain.score(prompts, rollout, metrics).tolist() == [0.0, 1.0, 1.0, 2.0]
    assert metrics["cost"] == 1.0 and metrics["cost/fixed"] == 1.0 and "cost_bound" not in metrics
    hc = LagrangeMultiplier(
        safety_config("safety.confidence_delta=0.1"), Costs([0.0, 1.0, 1.0, 2.0]), FakeRun(), [None] * 10
    )
    learned = hc.score(prompts, rollout, {})
    mean, std, inflation = hc.window_statistics()
    costs = torch.tensor([0.0, 1.0, 1.0, 2.0])
    assert inflation > 0 and learned.tolist() == pytest.approx(
        (costs + inflation * (costs**2 - 2 * costs * mean) / (2 * std)).tolist()
    )


def test_combine_keeps_the_cost_critics_returns():
    multiplier = LagrangeMultiplier(safety_config(), None, FakeRun())
    targets = multiplier.combine(
        {"advantages": torch.ones(2), "returns": torch.zeros(2)},
        {"advantages": torch.zeros(2), "returns": torch.full((2,), 3.0)},
    )
    assert targets["returns"].tolist() == [0.0, 0.0] and targets["cost_returns"].tolist() == [3.0, 3.0]


class Sampler:
    def __init__(self, costs):
        self.costs, self.calls = costs, []

    def sample_scores(self, source, prompts, sampling, seeds):
        self.calls.append((sampling.n, len(seeds)))
        return self.costs


@pytest.mark.parametrize(
    "costs, limit, passed",
    [
        ([0.25, 0.25, 0.25], 0.25, True),  # no spread: the bound is the mean, exactly at the limit: passes
        ([0.0, 0.5, 0.25], 0.25, False),  # mean at the limit, but the bound 0.25 + t(0.9, 2)·0.25/√3 is above
        ([0.0, 0.5, 0.25], 0.6, True),  # the same bound, 0.522, under a limit of 0.6
    ],
)
def test_the_safety_verdict_decides_where_the_model_goes(tmp_path, costs, limit, passed):
    from rlxf.recipes.online_safety import safety_verdict
    from rlxf.rollout import SamplingParams

    safety = safety_config("safety.confidence_delta=0.1", f"safety.cost_limit={limit}")
    run = FakeRun()
    run.dir = tmp_path
    (tmp_path / ("model" if not passed else "unsafe_candidate")).mkdir()  # a stale verdict of this folder
    multiplier = LagrangeMultiplier(safety, None, run, [None] * 3)
    sampler, results = Sampler(costs), {"warnings": []}
    folder = safety_verdict(multiplier, sampler, SamplingParams(8, 1.0, 1.0, 4), 0, results)
    test = results["safety_test"]
    assert sampler.calls == [(1, 3)]  # one sampled response per test prompt
    assert test["ucb"] == pytest.approx(student_t_upper_bound(costs, 0.1)["ucb"])
    assert test["passed"] is passed and folder == ("model" if passed else "unsafe_candidate")
    assert not (tmp_path / ("unsafe_candidate" if passed else "model")).exists()  # the stale one is gone
    assert bool(results["warnings"]) is not passed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rewards=[{kind: cost_model, model: x}]"], "belongs in safety.costs"),
        (["watch.gold=[{kind: cost_model, model: x}]"], "belongs in safety.costs"),
        (["safety.costs=[{kind: reward_model, model: x}]"], "would penalize what it rewards"),
        (["safety.costs=[{kind: length, normalize: true}]"], "normalize is for rewards"),
        (["watch.gold=[{kind: length, normalize: true}]"], "normalize is for rewards"),
        (["safety.confidence_delta=0.1"], "needs cost sources"),
        (["safety.costs=[{kind: length}]", "safety.confidence_delta=0.1", "task.eval_count=1"], "needs test prompts"),
        (["safety.costs=[{kind: length}]", "safety.confidence_delta=1.5"], "confidence_delta must be in"),
        (["watch.window=3"], "needs a gold signal"),
    ],
)
def test_settings_that_would_undo_a_constraint_or_a_watch_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(OnlineConfig, None, overrides)


@pytest.mark.parametrize(
    "weights, message",
    [("[[1, 0]]", "at least two weightings"), ("[[1, 0], [1, 0]]", "given twice"), ("[[1, .nan], [0, 1]]", "finite")],
)
def test_pareto_refuses_weightings_that_cannot_make_a_front(weights, message):
    from rlxf.pipelines.pareto import ParetoConfig

    two = "online.rewards=[{kind: length}, {kind: format, pattern: a}]"
    with pytest.raises(ValueError, match=message):
        load_config(ParetoConfig, None, [two, f"weights={weights}"])


def test_mpo_keeps_the_dpo_model_as_its_reference():
    from rlxf.pipelines.mpo import MPOConfig

    with pytest.raises(ValueError, match="kl_coef must be > 0"):
        load_config(MPOConfig, None, ["reward_model=x", "online.kl_coef=0"])

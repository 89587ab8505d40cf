"""Safe RLHF in `rlxf online`: costs scored beside the rewards, and the Lagrange multiplier λ that
weighs them (Dai et al., "Safe RLHF: Safe Reinforcement Learning from Human Feedback", ICLR 2024).

Each step: the costs of the samples join a window of the last ``cost_window`` costs; λ takes one
ascent step on the window's mean against ``cost_limit``; the reward and the cost each go through the
algorithm's own advantage estimator (PPO: each with its own critic; GRPO: each normalized within its
group), and the policy learns from ``(A_r − λ A_c) / (1 + λ)``. With the KL in the reward (PPO), the
reward carries ``−β·KL`` and the cost ``+β·KL``, so the combined advantage carries ``β·KL`` whatever λ
is, as the authors' code does.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections import deque
from pathlib import Path

import torch
from torch import Tensor

from rlxf.data.records import Prompt
from rlxf.eval.stats import student_t_quantile, student_t_upper_bound
from rlxf.losses.safety import lagrangian_advantages, multiplier_update, pessimistic_cost_surrogate
from rlxf.parallel import distributed
from rlxf.recipes.common import say
from rlxf.recipes.online_rollout import sample_seed, score
from rlxf.recipes.online_sections import SafetySection
from rlxf.rollout import SamplingParams
from rlxf.train import Run


class LagrangeMultiplier:
    """The cost source, λ and the window of recent costs λ is stepped on (both resume with the run's
    checkpoint)."""

    def __init__(self, safety: SafetySection, costs, run: Run, test_prompts: list[Prompt] = ()):
        self.safety, self.costs, self.run, self.test_prompts = safety, costs, run, list(test_prompts)
        self.test_size = len(self.test_prompts)
        if safety.high_confidence and self.test_size < 2:
            raise ValueError(f"HC-RLHF's safety test needs at least 2 test prompts, got {self.test_size}")
        self.log_value = math.log(safety.multiplier_init)
        self.window: deque[float] = deque(maxlen=safety.cost_window)
        if saved := run.resumed_files.get("lagrange"):
            self.log_value = float(saved["log_multiplier"])
            self.window.extend(saved["window"].tolist())

    @property
    def value(self) -> float:
        return math.exp(self.log_value)

    def score(self, prompts, rollout, metrics: dict[str, float]) -> Tensor:
        """The samples' costs, logged as cost and cost/<source>; λ stepped on them. Returns what the
        cost channel learns from: the costs, or under HC-RLHF the surrogate of their pessimistic bound."""
        costs = score(self.costs, prompts, rollout)
        metrics.update(costs.metrics("cost"))
        self.observe(costs.rewards, metrics)
        if not self.safety.high_confidence:
            return costs.rewards
        mean, std, inflation = self.window_statistics()
        return pessimistic_cost_surrogate(costs.rewards, mean=mean, std=std, inflation=inflation)

    def window_statistics(self) -> tuple[float, float, float]:
        """The window's mean μ̂ and sample deviation σ̂, and HC-RLHF's inflation
        k = C1·t(1−δ, n_b−1)/√n_b + C2·t(1−δ, n_s−1)/√n_s (0 where HC-RLHF is off or n_b < 2)."""
        values, s = list(self.window), self.safety
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        if not s.high_confidence or len(values) < 2:
            return mean, std, 0.0
        inflation = sum(
            weight * student_t_quantile(1 - s.confidence_delta, n - 1) / math.sqrt(n)
            for weight, n in ((s.bound_batch_weight, len(values)), (s.bound_test_weight, self.test_size))
        )
        return mean, std, inflation

    def observe(self, costs: Tensor, metrics: dict[str, float]) -> None:
        """Add this step's sampled costs (of every rank) to the window; after the delay, step λ on
        the window's mean (HC-RLHF: on its pessimistic bound μ̂ + kσ̂). The λ stepped here weighs this
        step's advantages (as the authors' code). One step per rollout: the authors' code steps λ once
        per PPO micro-batch update, so their λ moves several times per rollout of ours."""
        self.window.extend(distributed.gathered_equal(costs.detach().double().cpu()).tolist())
        mean_cost, std, inflation = self.window_statistics()
        constrained = mean_cost + inflation * std
        if self.safety.high_confidence:
            metrics["cost_bound"] = constrained
        if self.run.step >= self.safety.multiplier_delay:
            self.log_value = multiplier_update(
                self.log_value,
                constrained,
                cost_limit=self.safety.cost_limit,
                lr=self.safety.multiplier_lr,
                max_multiplier=self.safety.multiplier_max,
            )
        metrics.update(
            cost_window_mean=mean_cost, cost_violation=constrained - self.safety.cost_limit, multiplier=self.value
        )
        self.run.save_with_checkpoint(
            "lagrange",
            {
                "log_multiplier": torch.tensor(self.log_value, dtype=torch.float64),
                "window": torch.tensor(list(self.window), dtype=torch.float64),
            },
        )

    def combine(self, reward_targets: dict[str, Tensor], cost_targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """The policy's targets: the Lagrangian advantage, and the cost critic's returns beside the
        reward critic's."""
        targets = dict(reward_targets)
        targets["advantages"] = lagrangian_advantages(
            reward_targets["advantages"], cost_targets["advantages"], multiplier=self.value
        )
        if "returns" in cost_targets:
            targets["cost_returns"] = cost_targets["returns"]
        return targets

    def safety_test(self, sampler, sampling: SamplingParams, seed: int) -> dict | None:
        """HC-RLHF's safety test, on the main rank (None elsewhere, and without HC-RLHF): one sampled
        response per test prompt, costed; it passes when the Student-t upper bound
        ``mean + t(1−δ, n−1)·s/√n`` on the mean cost is at most ``cost_limit``."""
        if not self.safety.high_confidence:
            return None
        one = dataclasses.replace(sampling, n=1)
        seeds = [sample_seed(seed, -1, i) for i in range(self.test_size)]  # apart from every training draw
        costs = sampler.sample_scores(self.costs, self.test_prompts, one, seeds)
        if costs is None:
            return None
        bound = student_t_upper_bound(costs, self.safety.confidence_delta)
        return {**bound, "cost_limit": self.safety.cost_limit, "passed": bound["ucb"] <= self.safety.cost_limit}


def safety_verdict(
    multiplier: LagrangeMultiplier | None, sampler, sampling: SamplingParams, seed: int, results: dict
) -> str:
    """Where the model goes: model/, or unsafe_candidate/ when HC-RLHF's safety test fails (the run
    then found no safe solution, and says so in eval.json, the report and the card)."""
    test = multiplier.safety_test(sampler, sampling, seed) if multiplier is not None else None
    if test is None:
        return "model"
    folder = "model" if test["passed"] else "unsafe_candidate"
    stale = Path(multiplier.run.dir) / ("unsafe_candidate" if test["passed"] else "model")
    if stale.is_dir():  # an earlier verdict of this run folder no longer holds
        say(f"removing {stale}: this run's safety test now says otherwise")
        shutil.rmtree(stale)
    results["safety_test"] = test
    verdict = "passed" if test["passed"] else "failed: no safe solution found"
    say(
        f"safety test {verdict}: upper bound {test['ucb']:.4g} on the mean cost (mean {test['mean']:.4g}, "
        f"n={test['n']}, δ={test['delta']}) against the limit {test['cost_limit']:.4g}"
    )
    if test["passed"]:
        return folder
    results["warnings"].append(
        f"No safe solution found: the safety test's {1 - test['delta']:.0%} upper bound on the mean cost, "
        f"{test['ucb']:.4g}, is above the limit {test['cost_limit']:.4g}; this model is not safe to use."
    )
    return folder

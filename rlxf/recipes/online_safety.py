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

import math
from collections import deque

import torch
from torch import Tensor

from rlxf.losses.safety import lagrangian_advantages, multiplier_update
from rlxf.parallel import distributed
from rlxf.recipes.online_sections import SafetySection
from rlxf.train import Run

CRITIC_RETURNS = {"critic": "returns", "cost_critic": "cost_returns"}
"""Each critic the online loop may train, and the target of the estimator it regresses on."""


class LagrangeMultiplier:
    """λ and the window of recent costs it is stepped on; both resume with the run's checkpoint."""

    def __init__(self, safety: SafetySection, run: Run):
        self.safety, self.run = safety, run
        self.log_value = math.log(safety.multiplier_init)
        self.window: deque[float] = deque(maxlen=safety.cost_window)
        if saved := run.resumed_files.get("lagrange"):
            self.log_value = float(saved["log_multiplier"])
            self.window.extend(saved["window"].tolist())

    @property
    def value(self) -> float:
        return math.exp(self.log_value)

    def observe(self, costs: Tensor, metrics: dict[str, float]) -> None:
        """Add this step's sampled costs (of every rank) to the window; after the delay, step λ on
        the window's mean. The λ stepped here weighs this step's advantages (as the authors' code)."""
        self.window.extend(distributed.gathered_equal(costs.detach().double().cpu()).tolist())
        mean_cost = sum(self.window) / len(self.window)
        if self.run.step >= self.safety.multiplier_delay:
            self.log_value = multiplier_update(
                self.log_value,
                mean_cost,
                cost_limit=self.safety.cost_limit,
                lr=self.safety.multiplier_lr,
                max_multiplier=self.safety.multiplier_max,
            )
        metrics.update(
            cost_window_mean=mean_cost, cost_violation=mean_cost - self.safety.cost_limit, multiplier=self.value
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

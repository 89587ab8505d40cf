"""The over-optimization watch of `rlxf online`: a gold signal scored beside the optimized (proxy)
reward every step, and one warning when the proxy keeps rising while the gold falls (Gao et al.,
"Scaling Laws for Reward Model Overoptimization", ICML 2023), naming the step where they parted."""

from __future__ import annotations

import torch

from rlxf.eval.overoptimization import parting_step
from rlxf.parallel import distributed
from rlxf.recipes.common import say
from rlxf.recipes.online_rollout import score
from rlxf.train import Run


class OveroptimizationWatch:
    """The gold source, the per-step proxy and gold means so far (resumed with the run), and the step
    where they parted."""

    def __init__(self, window: int, gold, run: Run):
        self.window, self.source, self.run = window, gold, run
        self.proxy: list[float] = []
        self.gold: list[float] = []
        self.parted_at: int | None = None
        if saved := run.resumed_files.get("watch"):
            self.proxy, self.gold = saved["proxy"].tolist(), saved["gold"].tolist()
            self.parted_at = int(saved["parted_at"]) if int(saved["parted_at"]) >= 0 else None

    def observe(self, prompts, rollout, metrics: dict[str, float]) -> None:
        """The gold signal on this step's samples (gold, gold/<source>) beside the reward it does not
        drive; both means over ranks join the series; a warning the first time they part."""
        gold = score(self.source, prompts, rollout)
        metrics.update(gold.metrics("gold"))
        means = distributed.mean_over_ranks({"reward": metrics["reward"], "gold": metrics["gold"]})
        self.proxy.append(means["reward"])
        self.gold.append(means["gold"])
        if self.parted_at is None and (peak := parting_step(self.proxy, self.gold, self.window)) is not None:
            self.parted_at = peak
            say(
                f"warning: over-optimization: the reward rose while the gold signal fell since step {peak + 1} "
                f"(gold {self.gold[peak]:.3g} then, {self.gold[-1]:.3g} now); see report.md"
            )
        metrics["overoptimization"] = float(self.parted_at is not None)
        if self.parted_at is not None:
            metrics["gold_peak_step"] = float(self.parted_at + 1)
        self.run.save_with_checkpoint(
            "watch",
            {
                "proxy": torch.tensor(self.proxy, dtype=torch.float64),
                "gold": torch.tensor(self.gold, dtype=torch.float64),
                "parted_at": torch.tensor(-1 if self.parted_at is None else self.parted_at),  # the verdict stands
            },
        )

"""Several reward sources as one: weighted sum, each optionally normalized over the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rlxf.rewards.base import RewardBatch, RewardSource


@dataclass
class WeightedSum:
    """``r = Σ_k w_k · norm_k(r_k)``, where ``norm_k`` standardizes source k over the batch when
    ``normalize[k]`` is set (so sources on different scales contribute by their weights).
    Every source's raw score is kept in ``by_source`` (a name already taken gets the source's
    position: ``reward_model_2``). A sample a source has no opinion on gets 0
    from it and is left out of its standardization (TRL sums its reward functions the same way,
    skipping None)."""

    sources: Sequence[RewardSource]
    weights: Sequence[float]
    normalize: Sequence[bool] | None = None
    name: str = "combined"

    def __post_init__(self):
        if len(self.sources) != len(self.weights):
            raise ValueError("give one weight per reward source")
        self.normalize = list(self.normalize or [False] * len(self.sources))

    def score(self, prompts, completions, **context) -> RewardBatch:
        total = torch.zeros(len(completions))
        by_source, flags, details, spans = {}, {}, [{} for _ in completions], None
        for position, (source, weight, normalize) in enumerate(zip(self.sources, self.weights, self.normalize)):
            batch = source.score(prompts, completions, **context)
            # two sources of one kind (two reward models) are logged apart: the second as <name>_2
            by_source.update(
                {name if name not in by_source else f"{name}_{position + 1}": v for name, v in batch.by_source.items()}
            )
            flags.update(batch.flags)
            total += weight * _standardized(batch) if normalize else weight * batch.rewards.float()
            for row, detail in zip(details, batch.details):
                row[source.name] = detail
            if batch.span_rewards is not None:  # a normalized source has no spans (refused where configured)
                spans = spans or [[] for _ in completions]
                for row, segments in zip(spans, batch.span_rewards):
                    row.extend((end, weight * value) for end, value in segments)
        return RewardBatch(total, by_source, details, span_rewards=spans, flags=flags)


def _standardized(batch: RewardBatch) -> torch.Tensor:
    """The source's rewards standardized over the samples it has an opinion on; 0 elsewhere."""
    values = batch.rewards.float()
    opinions = batch.opinions if batch.opinions is not None else torch.ones_like(values, dtype=torch.bool)
    if opinions.sum() < 2:
        return values * opinions
    chosen = values[opinions]
    return torch.where(opinions, (values - chosen.mean()) / (chosen.std() + 1e-6), 0.0)

"""HERON's hierarchical comparison of samples by reward factors ranked by importance.

Bukharin et al., "Deep Reinforcement Learning from Hierarchical Preference Design" (HERON, 2023;
the authors' code): two samples are compared on the most important factor; if they differ by more than
``margin_k`` standard deviations of that factor over the batch, the higher one is preferred, otherwise
the next factor decides, and a pair no factor decides is a tie. HERON fits a Bradley–Terry reward model
to these preferences and trains on it; rlxf uses them directly, as each sample's win proportion
against the other samples of its prompt (as SPO uses a preference oracle), so no reward model is
fitted and the reward is exactly what the hierarchy prefers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from rlxf.losses.nash import win_proportions
from rlxf.rewards.base import RewardBatch, RewardSource


def hierarchical_preferences(factors: Tensor, margins: Sequence[float]) -> Tensor:
    """P(i ≻ j) for every pair of samples: 1, 0, or ½ where no factor decides.

    factors: (K, B), row k the k-th most important factor's score of each sample; the threshold of
    factor k is ``margins[k]`` times its standard deviation over the B samples (0 when B < 2)."""
    matrix = torch.full((factors.shape[1],) * 2, 0.5)
    undecided = torch.ones_like(matrix, dtype=torch.bool)
    for row, margin in zip(factors.float(), margins):
        spread = row.std() if row.numel() > 1 else torch.tensor(0.0)
        difference = row[:, None] - row[None, :]
        decided = undecided & (difference.abs() > margin * spread) & (difference != 0)
        matrix = torch.where(decided, (difference > 0).float(), matrix)
        undecided &= ~decided
    return matrix


@dataclass
class HierarchicalReward:
    """Each sample's win proportion among its prompt's samples under HERON's comparison."""

    factors: Sequence[RewardSource]
    margins: Sequence[float]
    name: str = "heron"

    def score(self, prompts, completions: Sequence[str], *, prompt_index: Sequence[int], **context) -> RewardBatch:
        scored = [f.score(prompts, completions, prompt_index=prompt_index, **context) for f in self.factors]
        factors = torch.stack([batch.rewards.float() for batch in scored])
        groups: dict[int, list[int]] = {}
        for sample, prompt in enumerate(prompt_index):
            groups.setdefault(prompt, []).append(sample)
        rewards = torch.full((len(completions),), 0.5)  # a sample alone (greedy evaluation) has no one to beat
        matrix = hierarchical_preferences(factors, self.margins)  # thresholds from the whole batch's spread
        for members in groups.values():
            if len(members) > 1:
                index = torch.tensor(members)
                rewards[index] = win_proportions(matrix[index][:, index][None])[0]
        by_source, flags = {self.name: rewards}, {}
        for position, batch in enumerate(scored, 1):
            for name, values in batch.by_source.items():  # two factors of one kind are logged apart
                key = f"{self.name}/{name}"
                by_source[key if key not in by_source else f"{key}_{position}"] = values
            flags.update(batch.flags)
        flags[f"reward/{self.name}/alone"] = sum(len(m) < 2 for m in groups.values()) / max(1, len(groups))
        return RewardBatch(rewards, by_source, [{} for _ in completions], flags=flags)

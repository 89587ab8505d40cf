"""One protocol for every reward source: ``score(prompts, completions) -> RewardBatch``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch
from torch import Tensor

from rlxf.data.records import Message


@dataclass
class RewardBatch:
    """Rewards for a batch of completions, with a record of where each part came from."""

    rewards: Tensor  # (B,) scalar reward per completion
    by_source: dict[str, Tensor] = field(default_factory=dict)  # name -> (B,) that source's raw score
    details: list[dict] = field(default_factory=list)  # per completion: parsed answer, test output, judge reply...
    span_rewards: list[list[tuple[int, float]]] | None = None
    """Fine-grained sources: per completion, (end character, reward) of each segment, summing to
    part of its reward; the online loop puts each on the segment's last token."""
    flags: dict[str, float] = field(default_factory=dict)  # facts about how it was scored, logged as they are
    opinions: Tensor | None = None  # (B,) bool: False where the source had no opinion (its reward is then 0)

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        """Mean reward overall and per source, and the flags, for logging (``prefix``: what the scores
        are, e.g. cost or gold)."""
        out = {prefix: float(self.rewards.float().mean())}
        out.update({f"{prefix}/{name}": mean_of_opinions(values) for name, values in self.by_source.items()})
        return out | self.flags


class RewardSource(Protocol):
    name: str

    def score(self, prompts: Sequence[list[Message]], completions: Sequence[str], **context) -> RewardBatch:
        """Score each completion of the prompt at the same index.

        ``context`` carries per-example fields the source may need, e.g. ``answer`` for a
        verifier or ``tests`` for code, one entry per completion.
        """
        ...


def single_source(name: str, values: Sequence[float], details: list[dict] | None = None) -> RewardBatch:
    rewards = torch.tensor(list(values), dtype=torch.float32)
    return RewardBatch(rewards, {name: rewards}, details or [{} for _ in values])


def mean_of_opinions(values: Tensor) -> float:
    """The mean over samples with a value; 0 where a source had no opinion on any (a NaN would
    spoil the average over ranks)."""
    values = values.float()
    return float(values.nanmean()) if not values.isnan().all() else 0.0

"""A principle-conditioned reward model (from ``rlxf principles``) as a reward source.

Wang et al., "RLBFF: Binary Flexible Feedback to bridge between Human Feedback & Verifiable Rewards"
(2025): the reward is the model's P[the response satisfies the principle], for principles chosen when
the run is configured; with several, their mean (each also logged on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from rlxf.data.principles import with_principle
from rlxf.rewards.base import RewardBatch


@dataclass
class PrincipleReward:
    model_path: str
    principles: Sequence[str]
    name: str = "principle"
    classifier: object = field(default=None, repr=False)

    def __post_init__(self):
        from rlxf.rewards.learned import LearnedReward

        if not self.principles or not all(isinstance(p, str) and p.strip() for p in self.principles):
            raise ValueError('principle: give principles, e.g. ["The response is concise.", "It cites the passages."]')
        self.classifier = LearnedReward(self.model_path, name=self.name, kind="principle_model", probability=True)

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        by_principle = {}
        for number, principle in enumerate(self.principles, 1):
            conditioned = [with_principle(prompt, principle) for prompt in prompts]
            by_principle[f"{self.name}_{number}"] = self.classifier.score(conditioned, completions).rewards.float()
        rewards = torch.stack(list(by_principle.values())).mean(dim=0)
        return RewardBatch(rewards, by_principle, [{} for _ in completions])

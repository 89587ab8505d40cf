"""A fine-grained reward model (from ``rlxf fgrm``) as a dense reward source.

Wu et al., "Fine-Grained Human Feedback Gives Better Rewards for Language Model Training" (NeurIPS
2023), Eq. 1: each segment of the response gets ``+1`` when the model finds no error in it and ``−1``
when it does (times the source's ``weight``: their w_k, 0.3 relevance, 0.5 factuality and 0.3
completeness in the authors' config), on the segment's last token. The completion's reward is the sum,
and ``span_rewards`` says where each part goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from rlxf.data.fine_grained import CONTEXT_CHARS, marked, segments_of
from rlxf.rewards.base import RewardBatch


@dataclass
class FineGrainedReward:
    """Segments each completion at the model's level and scores every segment with it."""

    model_path: str
    name: str = "fine_grained"
    level: str = field(default="", init=False)

    def __post_init__(self):
        from rlxf.models.loading import saved_settings
        from rlxf.rewards.learned import LearnedReward

        if not Path(self.model_path).is_dir():
            raise ValueError(f"{self.model_path}: no such folder (give the model/ folder `rlxf fgrm` saved)")
        settings = saved_settings(self.model_path)
        if settings.get("kind") != "fine_grained":
            raise ValueError(f"{self.model_path} was not saved by `rlxf fgrm` (its rlxf.json has no kind fine_grained)")
        self.level, self.name = settings["level"], settings["error_kind"]
        self.context_chars = settings.get("context_chars", CONTEXT_CHARS)
        self.classifier = LearnedReward(self.model_path, name=self.name, kind="fine_grained")

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        segments = [segments_of(text, self.level) if text.strip() else [] for text in completions]
        owners = [i for i, spans in enumerate(segments) for _ in spans]
        inputs = [
            marked(completions[i], span, self.context_chars) for i, spans in enumerate(segments) for span in spans
        ]
        logits = self.classifier.score([prompts[i] for i in owners], inputs).rewards.tolist() if inputs else []
        verdicts = iter(1.0 if logit > 0 else -1.0 for logit in logits)  # P(no error) > 1/2
        # on the segment's last visible character: a cut's trailing space belongs to the next token
        span_rewards = [
            [(start + len(text[start:end].rstrip()), next(verdicts)) for start, end in spans]
            for text, spans in zip(completions, segments)
        ]
        rewards = torch.tensor([sum(v for _, v in row) for row in span_rewards], dtype=torch.float32)
        details = [{"segments": len(row), "errors": sum(v < 0 for _, v in row)} for row in span_rewards]
        return RewardBatch(rewards, {self.name: rewards}, details, span_rewards=span_rewards)

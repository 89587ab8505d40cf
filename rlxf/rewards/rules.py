"""Rule rewards: a format check by regular expression and a length penalty."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rlxf.rewards.base import RewardBatch, single_source


@dataclass
class FormatReward:
    """``match_reward`` when the completion matches ``pattern`` (``re.search``, DOTALL), else ``miss_reward``."""

    pattern: str
    match_reward: float = 1.0
    miss_reward: float = 0.0
    name: str = "format"

    def __post_init__(self):
        try:
            self._regex = re.compile(self.pattern, re.DOTALL)
        except re.error as error:
            raise ValueError(f"format reward: pattern {self.pattern!r} is not a regular expression: {error}") from None

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        hits = [bool(self._regex.search(c)) for c in completions]
        return single_source(
            self.name, [self.match_reward if h else self.miss_reward for h in hits], [{"format_match": h} for h in hits]
        )


@dataclass
class LengthPenalty:
    """``-coef · max(0, characters - free_chars) / free_chars``: zero up to ``free_chars``, then linear."""

    free_chars: int = 1000
    coef: float = 1.0
    name: str = "length"

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        values = [-self.coef * max(0, len(c) - self.free_chars) / self.free_chars for c in completions]
        return single_source(self.name, values, [{"chars": len(c)} for c in completions])

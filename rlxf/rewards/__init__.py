"""Reward sources behind one protocol: ``score(prompts, completions, **context) -> RewardBatch``."""

from rlxf.rewards.base import RewardBatch, RewardSource
from rlxf.rewards.code import SandboxLimits, UnitTestReward, run_tests
from rlxf.rewards.combine import WeightedSum
from rlxf.rewards.math import MathVerifier
from rlxf.rewards.rules import FormatReward, LengthPenalty

__all__ = [
    "FormatReward",
    "LengthPenalty",
    "MathVerifier",
    "RewardBatch",
    "RewardSource",
    "SandboxLimits",
    "UnitTestReward",
    "WeightedSum",
    "run_tests",
]

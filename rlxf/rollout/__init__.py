"""Generation engines behind one protocol."""

from rlxf.rollout.base import Rollout, RolloutEngine, SamplingParams
from rlxf.rollout.hf import HFEngine

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams"]

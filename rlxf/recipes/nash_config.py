"""The Nash learners' config (`rlxf nash`, `rlxf online_ipo`, `rlxf nash_md`, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlxf.config import Checked, ModelSection, TrainSection
from rlxf.recipes.nash_learners import LEARNERS
from rlxf.recipes.online_config import TaskSection


@dataclass
class NashConfig(Checked):
    output_dir: str = "runs/nash"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    learner: str = "online_ipo"
    """online_dpo, online_ipo, egpo, inpo, nash_md or nash_mp (docs/games.md)."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained; its initial weights are the reference μ."""
    task: TaskSection = field(
        default_factory=lambda: TaskSection(
            name="file", path="data/hh_rlhf_harmless_demo.jsonl", eval_count=32, on_bad_row="skip"
        )
    )
    """Prompts: a prompt file, or a preference file whose prompts are used (default: the shipped HH-RLHF pairs)."""
    oracle: Any = ""
    """The preference oracle trained against: a folder saved by `rlxf pm`, a function ("file.py:fn" or
    "module:fn", called fn(prompts, firsts, seconds) -> P(first ≻ second) each; in Python the callable), else
    a judge LLM asked in both orders (empty: the embedded chat model as the judge)."""
    eval_oracle: Any = ""
    """An oracle the policy did not train against, judging its held-out win rate over the reference (empty:
    no win rate)."""
    beta: float = 0.1
    """KL weight to the reference (the regularized game's β; INPO's τ)."""
    eta: float = 1.0
    """Step size of the game: INPO's η (ητ ≤ 1) and Nash-MP's prox step η."""
    mixture: float = 0.125
    """nash_md: α of the opponent π^(1-α) μ^α (EGPO's Nash-MD runs; TRL's default is 0.5)."""
    anchor_every: int = 4
    """inpo: steps between refreshes of the frozen π_t; nash_mp: steps of each half of a prox step."""
    max_new_tokens: int = 64
    """Longest sampled response."""
    temperature: float = 1.0
    """Sampling temperature."""
    train: TrainSection = field(default_factory=lambda: TrainSection(batch_size=4, lr=1e-6, max_steps=100))
    """Optimization; batch_size counts prompts, each giving one pair."""

    def check(self):
        if self.learner not in LEARNERS:
            raise ValueError(f"learner must be one of {sorted(LEARNERS)}, got {self.learner!r}")
        if self.beta <= 0 or self.eta <= 0 or self.anchor_every < 1 or self.max_new_tokens < 1:
            raise ValueError("beta and eta must be > 0, anchor_every and max_new_tokens >= 1")
        if not 0 <= self.mixture <= 1:
            raise ValueError(f"mixture must be in [0, 1], got {self.mixture}")
        if self.learner == "inpo" and self.eta * self.beta > 1:
            raise ValueError(f"inpo needs eta * beta <= 1, got {self.eta} * {self.beta}")
        if self.learner in ("nash_md", "nash_mp") and self.temperature != 1.0:
            raise ValueError(f"{self.learner} needs samples of the policy itself: temperature must be 1")
        if self.train.micro_batch_size not in (0, self.train.batch_size):
            raise ValueError("the Nash loop takes each step's batch whole: leave train.micro_batch_size at 0")
        if self.eval_oracle and self.eval_oracle == self.oracle:
            raise ValueError(
                "eval_oracle must differ from oracle: the win rate needs a judge the policy did not train against"
            )

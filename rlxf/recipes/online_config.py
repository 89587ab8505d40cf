"""The config of `rlxf online` (and `rlxf grpo`, `rlxf ppo`, ...), checked as it loads.

An algorithm is a row of :data:`rlxf.recipes.online_algorithms.ALGORITHMS`. Every part of it can be
set on its own (``advantage=``, ``policy_loss=``, ``kl_penalty=``, ...); ``auto`` takes the
algorithm's. Settings that would change nothing in a run are refused (``unused_settings``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from rlxf.advantages import ADVANTAGE_ESTIMATORS
from rlxf.config import Checked, DistributedSection, ModelSection, ReferenceSection, TrainSection
from rlxf.losses.policy import POLICY_LOSSES
from rlxf.losses.reduce import AGGREGATIONS
from rlxf.recipes.online_algorithms import ALGORITHMS
from rlxf.recipes.online_sections import RewardSection, SafetySection, SamplingSection, TaskSection, WatchSection
from rlxf.rewards.registry import REWARD_SOURCES

DENSE_KINDS = ("fine_grained", "seq2seq")
"""Reward sources whose rewards go on tokens inside the response (span_rewards), not only at its end."""

REGISTRIES = {
    "algo": ALGORITHMS,
    "advantage": ADVANTAGE_ESTIMATORS,
    "policy_loss": POLICY_LOSSES,
    "aggregation": AGGREGATIONS,
    "rewards[].kind": REWARD_SOURCES,
}
"""What `rlxf online --help` lists as the choices of these fields."""


@dataclass
class OnlineConfig(Checked):
    output_dir: str = "runs/online"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    algo: str = "grpo"
    """grpo, dr_grpo, rloo, remax, reinforce_pp, ppo (GAE with a critic), or the supervised rft (best-of-n
    fine-tuning; with kl_coef > 0 it is SuperHF) and nft (negative-aware fine-tuning). See docs/algorithms.md."""
    advantage: str = "auto"
    """auto (the algorithm's) or an estimator of rlxf.advantages.ADVANTAGE_ESTIMATORS."""
    policy_loss: str = "auto"
    """auto (the algorithm's) or a loss of rlxf.losses.policy.POLICY_LOSSES."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained."""
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    """KL anchor; empty name = the initial policy (kept frozen in memory, or LoRA adapters switched off)."""
    task: TaskSection = field(default_factory=TaskSection)
    """Prompts and what the rewards check them against."""
    rewards: list[RewardSection] = field(default_factory=lambda: [RewardSection()])
    """Reward sources, summed with their weights."""
    macro_actions: str = "none"
    """MA-RLHF's macro actions for PPO's credit assignment (Chai et al. 2025): fixed (macro_size-token
    n-grams, the paper's) or punctuation (ended by . , ; : ! ? or a line break: rlxf's own, a cheap
    stand-in for their parsing-based cut); GAE then runs over macro actions, each token taking its
    macro action's advantage. none: every token its own action."""
    macro_size: int = 5
    """Tokens in a fixed macro action (the paper's n = 5)."""
    dense_rewards: bool = True
    """Fine-grained and seq2seq sources ({kind: fine_grained}, {kind: seq2seq}) put each segment's (each
    token's) reward on its last token, for the
    estimators that discount per-token rewards (ppo, reinforce_pp); false: their sum on the response's
    last token, as a sequence-level reward."""
    safety: SafetySection = field(default_factory=SafetySection)
    """Cost sources and the constraint on their mean (Safe RLHF's Lagrangian); none by default."""
    watch: WatchSection = field(default_factory=WatchSection)
    """A gold signal beside the optimized reward, and a warning when the reward rises while it falls."""
    sampling: SamplingSection = field(default_factory=SamplingSection)
    """How the policy samples."""
    train: TrainSection = field(default_factory=lambda: TrainSection(batch_size=4, lr=1e-6, max_steps=100))
    """Optimization; batch_size counts prompts per step (each with sampling.n samples)."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    clip_low: float = 0.2
    """PPO ratio clip below 1."""
    clip_high: float = 0.2
    """PPO ratio clip above 1 (DAPO's clip-higher: 0.28)."""
    kl_coef: float = 0.0
    """Weight β of KL(policy || reference); 0 = no reference model at all (as TRL's GRPO and Dr. GRPO)."""
    kl_estimator: str = "auto"
    """auto (the algorithm's: k1 where its paper puts KL in the reward, k3 for GRPO's loss term), k1, k2 or k3
    (Schulman 2020)."""
    kl_penalty: str = "auto"
    """auto (the algorithm's paper: reward for ppo, reinforce_pp, rloo, remax; loss for grpo, dr_grpo, rft, nft),
    loss (a per-token loss term) or reward (-β·KL_t in the per-token rewards, before advantages)."""
    kl_target: float = 0.0
    """> 0: adapt kl_coef toward this KL per sequence (Ziegler et al. 2019)."""
    kl_horizon: int = 10000
    """kl_target: the adaptive controller's horizon in sequences (larger adapts more slowly)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    aggregation: str = "auto"
    """auto (the algorithm's: sequence_mean for grpo, constant for dr_grpo, token_mean otherwise), token_mean,
    sequence_mean or constant (Σ over tokens / (sequences × sampling.max_new_tokens))."""
    dynamic_sampling: bool = False
    """DAPO: replace prompts whose samples all get the same reward, drawing extra prompts."""
    max_sampling_rounds: int = 3
    """Dynamic sampling: most rollouts per step; a batch still short after them is filled with
    zero-variance groups (counted as dynamic_sampling_unfilled)."""
    reference_refresh_every: int = 0
    """Copy the policy into the reference every N steps (0 = never)."""
    eval_greedy_every: int = 0
    """Greedy evaluation on held-out prompts every N steps (0 = before and after training only)."""
    critic: str = ""
    """ppo: the value model's backbone (a scalar head is added); empty = the policy's model."""
    gamma: float = 1.0
    """ppo, reinforce_pp: discount."""
    lam: float = 0.95
    """ppo: GAE λ."""
    value_clip: float = 0.2
    """ppo: clip of the value update."""
    value_coef: float = 0.5
    """ppo: weight of the value loss (the critic shares the optimizer)."""
    async_rollouts: bool = False
    """One step off: rollout workers generate the next step's samples while the trainer trains on
    this step's, so every rollout is one update stale; the PPO ratio is then taken against the
    sampler's own log-probs (the policy that drew the samples)."""
    tis_cap: float = 0.0
    """Truncated importance sampling: weight each token's loss by min(π_old / π_sampler, tis_cap),
    correcting for samples drawn by a different engine (vLLM's numerics); 0 = off. Not with
    async_rollouts, whose ratio is already taken against the sampler."""
    updates_per_rollout: int = 1
    """Optimizer steps on each rollout (PPO epochs, GRPO's μ); after the first, the ratio to the
    sampling policy moves off 1 and clipping takes effect."""
    success_threshold: float = 0.5
    """rft: keep only samples rewarded at least this; nft: samples at least this are correct."""
    rft_top_k: int = 1
    """rft: samples kept per prompt, best first (sampling.n keeps every one above the threshold)."""
    sppo_eta: float = 1.0
    """sppo: η of the targets η (r − SoftMean_η(r)) (verl's sppo_eta)."""

    def check(self):
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {self.algo!r}")
        _check_choice("advantage", self.advantage, ADVANTAGE_ESTIMATORS)
        _check_choice("policy_loss", self.policy_loss, POLICY_LOSSES)
        _check_choice("kl_penalty", self.kl_penalty, ("loss", "reward"))
        _check_choice("kl_estimator", self.kl_estimator, ("k1", "k2", "k3"))
        if self.macro_actions not in ("none", "fixed", "punctuation"):
            raise ValueError(f"macro_actions must be none, fixed or punctuation, got {self.macro_actions!r}")
        if self.macro_size < 1:
            raise ValueError(f"macro_size must be >= 1, got {self.macro_size}")
        _check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_ranges(self)
        _check_combinations(self)
        if unused := unused_settings(self):
            raise ValueError("settings that would change nothing in this run: " + "; ".join(unused))

    # what the run uses: the algorithm's defaults where a setting is auto
    @property
    def advantage_name(self) -> str:
        return _or_default(self.advantage, ALGORITHMS[self.algo].advantage)

    @property
    def estimator(self) -> Callable:
        return ADVANTAGE_ESTIMATORS[self.advantage_name]

    @property
    def loss_fn(self) -> Callable:
        return POLICY_LOSSES[_or_default(self.policy_loss, ALGORITHMS[self.algo].policy_loss)]

    @property
    def kl_in_reward(self) -> bool:
        return _or_default(self.kl_penalty, ALGORITHMS[self.algo].kl_penalty) == "reward"

    @property
    def kl_kind(self) -> str:
        return _or_default(self.kl_estimator, ALGORITHMS[self.algo].kl_estimator)

    @property
    def loss_aggregation(self) -> str:
        return _or_default(self.aggregation, ALGORITHMS[self.algo].aggregation)

    def loss_options(self) -> dict[str, Any]:
        """The policy loss's keyword hyperparameters that this config sets (e.g. clip_low, clip_high)."""
        taken = inspect.signature(self.loss_fn).parameters
        return {name: getattr(self, name) for name in taken if name in OnlineConfig.__dataclass_fields__}


def _or_default(value: str, default: str) -> str:
    return default if value == "auto" else value


def _check_choice(name: str, value: str, choices) -> None:
    if value != "auto" and value not in choices:
        raise ValueError(f"{name} must be auto or one of {sorted(choices)}, got {value!r}")


def _check_ranges(config: OnlineConfig) -> None:
    checks = [
        (config.updates_per_rollout >= 1, "updates_per_rollout must be >= 1"),
        (config.tis_cap >= 0, "tis_cap must be >= 0 (0 = off)"),
        (config.kl_horizon >= 1, "kl_horizon must be >= 1"),
        (0 <= config.kl_coef < math.inf and 0 <= config.kl_target < math.inf, "kl_coef and kl_target must be >= 0"),
        (config.max_sampling_rounds >= 1, "max_sampling_rounds must be >= 1"),
        (0 <= config.clip_low < 1 and config.clip_high >= 0, "need 0 <= clip_low < 1 and clip_high >= 0"),
        (0 <= config.gamma <= 1 and 0 <= config.lam <= 1, "gamma and lam must be in [0, 1]"),
        (config.value_clip >= 0 and config.value_coef >= 0, "value_clip and value_coef must be >= 0"),
        (config.rft_top_k >= 1, "rft_top_k must be >= 1"),
        (config.sppo_eta > 0, "sppo_eta must be > 0"),
        (math.isfinite(config.success_threshold), "success_threshold must be a number"),
        (math.isfinite(config.entropy_coef), "entropy_coef must be a number"),
    ]
    for holds, message in checks:
        if not holds:
            raise ValueError(message)


def _check_combinations(config: OnlineConfig) -> None:
    if not config.rewards:
        raise ValueError("rewards is empty: give at least one reward source, e.g. rewards=[{kind: math}]")
    if config.async_rollouts and not config.distributed.rollout_workers:
        raise ValueError("async_rollouts overlap generation with training: set distributed.rollout_workers")
    if config.async_rollouts and config.dynamic_sampling:
        raise ValueError("async_rollouts and dynamic_sampling cannot be combined")
    estimator, loss = config.estimator, config.loss_fn
    if (estimator.groups or config.dynamic_sampling) and config.sampling.n < 2:
        raise ValueError("comparing the samples of a prompt (group estimators, dynamic sampling) needs sampling.n >= 2")
    if missing := [name for name in loss.inputs if name not in estimator.produces]:
        raise ValueError(
            f"policy loss {loss.__name__} reads {missing}, which advantage={config.advantage_name} does not give"
        )
    _check_roles_of_sources(config)
    if config.safety.constrained and (loss.inputs != ("advantages",) or "advantages" not in estimator.produces):
        raise ValueError(
            f"safety.costs weigh advantages against each other: {config.algo} learns from "
            f"{', '.join(loss.inputs)}; use an algorithm with advantages (ppo, grpo, rloo, reinforce_pp, remax, dr_grpo)"
        )
    if config.kl_coef > 0 and config.kl_in_reward and loss.inputs != ("advantages",):
        raise ValueError(f"{loss.__name__} learns from labels, not rewards: its KL is a loss term (kl_penalty=loss)")


def _check_roles_of_sources(config: OnlineConfig) -> None:
    """A cost model maximized as a reward maximizes harm; a reward model as a cost penalizes what it
    rewards; a source standardized over each batch has no level for a limit, a test or a watch to read."""
    if any(s.kind == "cost_model" for s in config.rewards + config.watch.gold):
        raise ValueError("a cost_model source belongs in safety.costs: in rewards or watch.gold it would reward harm")
    if any(s.kind in ("reward_model", "reaction_model") for s in config.safety.costs):
        raise ValueError(
            "safety.costs takes a cost model ({kind: cost_model, model: <folder from rlxf cm>}) or any source whose "
            "score is a cost; a reward or reaction model there would penalize what it rewards"
        )
    if config.macro_actions != "none" and config.dense_rewards and any(s.kind in DENSE_KINDS for s in config.rewards):
        raise ValueError(
            "macro actions average the rewards within each macro action (MA-RLHF), which would divide a "
            "fine-grained segment's (or token's) reward by its macro action's length: use one of macro_actions and dense_rewards"
        )
    if any(s.normalize and s.kind in DENSE_KINDS for s in config.rewards):
        raise ValueError(
            "a fine_grained or seq2seq source gives ±weight per segment or token: normalize cannot standardize "
            "those; set its weight instead"
        )
    if (config.watch.gold or config.watch.for_labelers_every) and any(s.normalize for s in config.rewards):
        raise ValueError(
            "the over-optimization watch compares the reward's rise with its gold signal: a reward source with "
            "normalize: true is standardized over each batch, so the reward has no level to rise; set weights instead"
        )
    if any(s.normalize for s in config.safety.costs + config.watch.gold):
        raise ValueError(
            "normalize is for rewards: a cost or gold signal standardized over each batch has no level for the "
            "cost limit, the safety test or the watch to read"
        )
    s = config.safety
    if s.high_confidence and not s.test_path and config.task.eval_count < 2:
        raise ValueError("HC-RLHF's safety test needs test prompts: task.eval_count >= 2, or safety.test_path")


def _has_kl(config: OnlineConfig) -> bool:
    return config.kl_coef > 0


def _estimator_reads(name: str) -> Callable[[OnlineConfig], bool]:
    return lambda c: name in c.estimator.reads


def _critic(config: OnlineConfig) -> bool:
    return "values" in config.estimator.needs


def _ratio_moves(config: OnlineConfig) -> bool:
    """π_θ/π_old leaves 1 only on later passes over a rollout or on samples from another policy."""
    return "clip_low" in config.loss_options() and (config.updates_per_rollout > 1 or config.async_rollouts)


def _workers(config: OnlineConfig) -> bool:
    return config.distributed.workers_per_rank > 0


def _constrained(config: OnlineConfig) -> bool:
    return config.safety.constrained


KL = "a KL term (kl_coef > 0)"
COSTS = "cost sources (safety.costs)"
_SAFETY_SETTINGS = (
    "cost_limit",
    "multiplier_init",
    "multiplier_lr",
    "multiplier_max",
    "multiplier_delay",
    "cost_window",
    "confidence_delta",
)
ESTIMATOR = "an advantage estimator that reads it (this run's is {advantage})"
# A setting moved from its default where it changes nothing is a mistake to report, not to run.
_NEEDS: dict[str, tuple[Callable[[OnlineConfig], bool], str]] = {
    "kl_penalty": (_has_kl, KL),
    "kl_estimator": (_has_kl, KL),
    "kl_target": (_has_kl, KL),
    "kl_horizon": (lambda c: c.kl_target > 0, "the adaptive controller (kl_target > 0)"),
    "reference.name": (_has_kl, KL),
    "reference_refresh_every": (_has_kl, KL),
    "distributed.reference_worker": (_has_kl, KL),
    "critic": (_critic, "an estimator with a critic (advantage=gae, as algo=ppo)"),
    "lam": (_estimator_reads("lam"), ESTIMATOR),
    "value_clip": (_critic, "an estimator with a critic (advantage=gae, as algo=ppo)"),
    "value_coef": (_critic, "an estimator with a critic (advantage=gae, as algo=ppo)"),
    "gamma": (_estimator_reads("gamma"), ESTIMATOR),
    "rft_top_k": (_estimator_reads("top_k"), ESTIMATOR),
    "sppo_eta": (_estimator_reads("eta"), ESTIMATOR),
    "success_threshold": (_estimator_reads("threshold"), ESTIMATOR),
    "clip_low": (_ratio_moves, "a clipped loss whose ratio leaves 1 (updates_per_rollout > 1 or async_rollouts)"),
    "clip_high": (_ratio_moves, "a clipped loss whose ratio leaves 1 (updates_per_rollout > 1 or async_rollouts)"),
    "max_sampling_rounds": (lambda c: c.dynamic_sampling, "dynamic_sampling=true"),
    "tis_cap": (
        lambda c: not c.async_rollouts,
        "samples not weighed against their sampler already (async_rollouts=false)",
    ),
    "sampling.vllm_lora": (lambda c: c.sampling.engine == "vllm" and c.policy.lora.rank > 0, "LoRA on vLLM"),
    "distributed.weight_sync": (lambda c: c.distributed.rollout_workers > 0, "rollout workers"),
    "distributed.gpus_per_worker": (_workers, "Ray workers (rollout, reward or reference)"),
    "eval_greedy_every": (lambda c: c.task.eval_count > 0, "held-out prompts (task.eval_count > 0)"),
    **{f"safety.{name}": (_constrained, COSTS) for name in _SAFETY_SETTINGS},
    "safety.cost_critic": (lambda c: _constrained(c) and _critic(c), "cost sources and a critic (algo=ppo)"),
    "watch.window": (lambda c: bool(c.watch.gold), "a gold signal (watch.gold)"),
    "macro_actions": (_critic, "an estimator with a critic (advantage=gae, as algo=ppo)"),
    "macro_size": (lambda c: c.macro_actions == "fixed", "macro_actions=fixed"),
    "dense_rewards": (
        # the estimators that discount per-token rewards are the ones that read gamma
        lambda c: any(s.kind in DENSE_KINDS for s in c.rewards) and "gamma" in c.estimator.reads,
        "a fine_grained or seq2seq reward source and an estimator of per-token rewards (ppo, reinforce_pp)",
    ),
    "watch.for_labelers_samples": (lambda c: c.watch.for_labelers_every > 0, "watch.for_labelers_every > 0"),
    **{
        f"safety.{name}": (lambda c: c.safety.high_confidence, "HC-RLHF (safety.confidence_delta > 0 and safety.costs)")
        for name in ("bound_batch_weight", "bound_test_weight", "test_path")
    },
}


def unused_settings(config: OnlineConfig) -> list[str]:
    """Each setting moved from its default that has no effect in this run, with what it needs. A
    value that names what ``auto`` takes anyway (as configs saved with resolved values do) is not moved."""
    algorithm = ALGORITHMS[config.algo]
    resolved = {"kl_penalty": algorithm.kl_penalty, "kl_estimator": algorithm.kl_estimator}
    return [
        f"{path}={_value(config, path)!r} needs " + what.format(advantage=config.advantage_name)
        for path, (applies, what) in _NEEDS.items()
        if _value(config, path) not in (_default(path), resolved.get(path)) and not applies(config)
    ]


def _value(config: Any, path: str) -> Any:
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _default(path: str) -> Any:
    """The default of a dotted field of OnlineConfig, without building an OnlineConfig."""
    owner: Any = OnlineConfig
    *sections, leaf = path.split(".")
    for name in sections:
        owner = type(OnlineConfig.__dataclass_fields__[name].default_factory())
    spec = owner.__dataclass_fields__[leaf]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default

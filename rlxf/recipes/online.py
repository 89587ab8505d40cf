"""`rlxf online` (and `rlxf grpo`, `rlxf rloo`, ...): learn from rewards on the policy's own samples.

Each step reads as its stages:
    rollout (n samples per prompt; DAPO's dynamic sampling)  -> score (reward sources)
    -> experience (reference log-probs, KL, advantages)      -> loss and update(s) -> end of step

What an algorithm is (its advantage estimator, policy loss and its paper's defaults) is a row
of :data:`rlxf.recipes.online_algorithms.ALGORITHMS`; this loop never asks for the algorithm's name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlxf.data.records import Prompt
from rlxf.eval.overoptimization import distinct_n
from rlxf.losses.policy import AdaptiveKLController, kl_estimate
from rlxf.models.logprobs import TokenLogps, token_values
from rlxf.parallel import distributed
from rlxf.parallel.ray_ranks import close_pools, start_ray_for_workers
from rlxf.recipes import online_setup as setup
from rlxf.recipes.common import build_policy, encoder_for, save_results, say
from rlxf.recipes.online_config import REGISTRIES, OnlineConfig
from rlxf.recipes.online_loss import Experience, advantage_targets, loss_pass
from rlxf.recipes.online_rollout import (
    PolicySampler,
    dense_token_rewards,
    dynamic_sampling,
    extra_prompts,
    macro_action_ids,
    merge_rollouts,
    pack_samples,
    rank_prompts,
    scalars,
    score,
    zero_variance_groups,
)
from rlxf.recipes.online_safety import LagrangeMultiplier, safety_verdict
from rlxf.recipes.online_watch import LabelerExport, OveroptimizationWatch
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.rewards import RewardBatch
from rlxf.rollout import SamplingParams
from rlxf.train import Run
from rlxf.train.run import MetricSums

__all__ = ["REGISTRIES", "OnlineConfig", "train_online"]


@dataclass
class Roles:
    """What the loop works with, built once by :func:`start`."""

    run: Run
    sampler: PolicySampler  # generation from the live policy (engine, vLLM or rollout workers)
    source: Any  # the reward source (the configured sources summed, or reward workers)
    costs: Any  # the cost source (safety.costs summed); None without a constraint
    multiplier: LagrangeMultiplier | None  # Safe RLHF's λ; None without a constraint
    gold: Any  # the over-optimization watch's gold source (watch.gold summed); None without one
    watch: OveroptimizationWatch | None
    labelers: LabelerExport | None  # samples handed to people as the watch's gold; None when off
    reference: Any  # log π_ref (in the trainer or a Ray worker); None without a KL term
    critics: nn.ModuleDict  # V(s_t) for estimators that need values (ppo): "critic", and "cost_critic" with costs
    kl: KLCoefficient
    train_prompts: list[Prompt]
    held_prompts: list[Prompt]
    tokenizer: Any
    ray_joined: bool | None  # whether this process joined Ray for its workers (None: no workers)


def train_online(config: OnlineConfig) -> dict:
    roles = start(config)
    run, results = roles.run, {}
    if run.step == 0 and (before := held_out_eval(config, roles)):
        results["before"] = before
        say(f"held-out greedy reward before training: {before['greedy_reward']:.3f}")
    ahead = None  # async_rollouts: the next step's generation, in flight on the rollout workers
    for batch in run.steps():
        prompts, rollout, rewards, ahead, metrics = collect(config, roles, batch, ahead)  # 1-2. rollout, score
        costs = roles.multiplier.score(prompts, rollout, metrics) if roles.multiplier else None
        experience = make_experience(config, roles, prompts, rollout, rewards, costs)  # 3. experience
        sums = MetricSums()
        total, tokens = update_policy(config, run, experience, roles.kl.coef, sums)  # 4. loss, update(s)
        metrics.update(rewards.metrics(), **sums.means(), **step_metrics(config, roles, rollout, rewards, experience))
        roles.kl.observe(experience, metrics)  # 5. end of step
        if roles.watch is not None:
            roles.watch.observe(prompts, rollout, metrics)
        if roles.labelers is not None:
            roles.labelers.observe(prompts, rollout)
        run.end_step(total, metrics, tokens=tokens)
        if roles.reference is not None and _every(config.reference_refresh_every, run.step):
            with run.full_weights():
                roles.reference.refresh()
        if _every(config.eval_greedy_every, run.step) and run.step < run.total_steps:
            held_out_eval(config, roles)
    return finish(config, roles, results)


def _every(period: int, step: int) -> bool:
    return period > 0 and step % period == 0


def start(config: OnlineConfig) -> Roles:
    """Prompts, the policy and every role around it, and the run (resumed if it has checkpoints)."""
    train_prompts, held_prompts = setup.load_task(config.task, config.train.seed)
    setup.check_reward_columns(config.rewards, train_prompts + held_prompts)  # before anything is written
    setup.check_batch_fits(train_prompts, config.train.batch_size, config.task)
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    say(f"task {config.task.name}: {len(train_prompts)} training prompts, {len(held_prompts)} held out")
    policy, tokenizer = build_policy(config.policy, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, setup.data_limits(config))
    ray_joined = start_ray_for_workers(config.distributed, output_dir, config.distributed.workers_per_rank)
    engine, source = setup.rollout_engine(config, policy, encoder), setup.reward_source(config)
    reference = setup.reference_model(config, policy) if config.kl_coef > 0 else None
    costs = setup.reward_function(config.safety.costs) if config.safety.constrained else None
    critics = setup.build_critics(config)
    trained = nn.ModuleDict({"policy": policy, **critics}) if critics else policy
    strategy = config.distributed.strategy
    run = Run(
        output_dir,
        trained,
        config.train,
        num_examples=len(train_prompts),
        name=config.algo,
        strategy=strategy,
        tokenizer=tokenizer,
        progress_keys=("reward", "kl", "entropy"),
    )
    sampler = PolicySampler(engine, run, functools.partial(setup.vllm_weights, config, policy))
    kl = KLCoefficient(config, run)
    test_prompts = setup.safety_test_prompts(config.safety, held_prompts, train_prompts)
    multiplier = LagrangeMultiplier(config.safety, costs, run, test_prompts) if costs is not None else None
    gold = setup.reward_function(config.watch.gold) if config.watch.gold else None
    watch = OveroptimizationWatch(config.watch.window, gold, run) if gold is not None else None
    every, samples = config.watch.for_labelers_every, config.watch.for_labelers_samples
    labelers = LabelerExport(every, samples, run) if every else None
    return Roles(
        run,
        sampler,
        source,
        costs,
        multiplier,
        gold,
        watch,
        labelers,
        reference,
        critics,
        kl,
        train_prompts,
        held_prompts,
        tokenizer,
        ray_joined,
    )


def held_out_eval(config: OnlineConfig, roles: Roles) -> dict | None:
    """Greedy reward on the held-out prompts, logged (on the main rank; None elsewhere)."""
    others = {name: source for name, source in (("cost", roles.costs), ("gold", roles.gold)) if source is not None}
    evaluation = roles.sampler.evaluate(roles.source, roles.held_prompts, config.sampling.max_new_tokens, others)
    if evaluation is not None:
        roles.run.log_eval(scalars(evaluation))
    return evaluation


def finish(config: OnlineConfig, roles: Roles, results: dict) -> dict:
    """The last evaluation, the saved model and eval.json; workers closed."""
    run = roles.run
    results["steps"] = run.step
    results["warnings"] = [w for section in config.rewards for w in section.warnings()]
    if (after := held_out_eval(config, roles)) is not None:
        results.update(after=after, held_out=scalars(after))
    folder = safety_verdict(roles.multiplier, roles.sampler, sampling_params(config), config.train.seed, results)
    run.finish()
    if roles.ray_joined is not None:
        close_pools((roles.sampler.engine, roles.source, roles.reference), leave_ray=roles.ray_joined)
    if results.get("before"):
        before, after = results["before"]["greedy_reward"], results["after"]["greedy_reward"]
        say(f"held-out greedy reward: {before:.3f} -> {after:.3f}")
    model = run.model["policy"] if roles.critics else run.model
    title, base = f"{config.algo.upper()} policy", config.policy.name
    save_results(
        Path(config.output_dir),
        model,
        roles.tokenizer,
        results,
        title=title,
        recipe=config.algo,
        base_model=base,
        config=config,
        trained=run.trained_now,
        model_folder=folder,
    )
    return results


def sampling_params(config: OnlineConfig) -> SamplingParams:
    s = config.sampling
    return SamplingParams(s.max_new_tokens, s.temperature, s.top_p, s.n, tuple(s.stop))


# ---- 1-2. rollout and score ----------------------------------------------------------------------


def collect(config: OnlineConfig, roles: Roles, batch: list[int], ahead):
    """This rank's prompts of the step, their samples and rewards, and the rollout's metrics; with
    async rollouts the next step's generation is started before returning (handed back as ``ahead``)."""
    run, sampler, source, train_prompts = roles.run, roles.sampler, roles.source, roles.train_prompts
    seed, sampling, n = config.train.seed, sampling_params(config), config.sampling.n
    prompts, seeds = rank_prompts(train_prompts, batch, seed, run.step)
    if config.async_rollouts:
        rollout, ahead = async_rollout(run, sampler.engine, train_prompts, prompts, seeds, sampling, seed, ahead)
    else:
        rollout = sampler.generate(prompts, sampling, seeds=seeds)
    first = (prompts, rollout, score(source, prompts, rollout))
    metrics = {"zero_variance_groups_sampled": float(zero_variance_groups(first[2].rewards, n).float().mean())}
    if not config.dynamic_sampling:
        return (*first, ahead, metrics)

    def draw(round_: int):
        more = extra_prompts(train_prompts, len(prompts), seed, run.step, round_)
        rollout = sampler.generate(more, sampling)
        return more, rollout, score(source, more, rollout)

    parts = dynamic_sampling(first, draw, n, config.max_sampling_rounds)
    prompts, rollout, rewards, filled = merge_rollouts(parts, len(prompts), n)
    if filled:
        say(
            f"step {run.step + 1}: {filled} of {len(prompts)} groups on this rank have no reward variance after "
            f"{len(parts)} rollouts (max_sampling_rounds={config.max_sampling_rounds})"
        )
    metrics.update(rollouts=len(parts), dynamic_sampling_unfilled=filled / len(prompts))
    return prompts, rollout, rewards, ahead, metrics


def async_rollout(run: Run, engine, train_prompts, prompts, seeds, sampling, seed, ahead):
    """One step off: this step's rollout (started during the last step) and the next step's, started
    now with the weights as they are; a resumed run draws its first rollout with the weights the
    interrupted one drew it with."""
    saved = run.resumed_files.get("sampler") if run.step == run.resumed_from else None
    rollout = (ahead or engine.submit([p.messages for p in prompts], sampling, seeds=seeds, weights=saved)).result()
    ahead = None
    if (following := run.batch_at(run.step + 1)) is not None:
        next_prompts, next_seeds = rank_prompts(train_prompts, following, seed, run.step + 1)
        ahead = engine.submit([p.messages for p in next_prompts], sampling, seeds=next_seeds)
        if run.saves_checkpoint_after_this_step():
            run.save_with_checkpoint("sampler", ahead.sampler_weights())
    return rollout, ahead


def greedy_rollout(config: OnlineConfig, sampler: PolicySampler, prompts):
    """ReMax's baseline: each prompt's greedy completion (when the estimator needs it), else None."""
    if "greedy_rewards" not in config.estimator.needs:
        return None
    s = config.sampling
    return sampler.generate(prompts, SamplingParams(max_new_tokens=s.max_new_tokens, temperature=0, stop=tuple(s.stop)))


# ---- 3. experience: reference log-probs, KL, advantages -------------------------------------------


def make_experience(
    config: OnlineConfig,
    roles: Roles,
    prompts,
    rollout,
    rewards: RewardBatch,
    costs: Tensor | None = None,
) -> Experience:
    """The rollout with its reference log-probs and KL, the critics' values, and the estimator's
    targets (advantages, ...) from the rewards, KL-shaped where the algorithm puts KL in the reward,
    fine-grained segment rewards on their segments' tokens, over MA-RLHF's macro actions when asked;
    with costs, the Lagrangian's advantage (:mod:`rlxf.recipes.online_safety`)."""
    n, mask, reference = config.sampling.n, rollout.mask, roles.reference
    sequences = list(zip(rollout.prompt_ids, rollout.completion_ids))
    experience = Experience(sequences, mask, {}, rollout.logprobs)
    if reference is not None:
        packed = pack_samples(sequences, n)
        ref = reference.token_logps(packed, config.sampling.temperature)
        experience.ref_logps, _ = TokenLogps(ref, packed.score_owner, packed.num_sequences).as_matrix()
        experience.kl = kl_estimate(rollout.logprobs, experience.ref_logps, config.kl_kind) * mask
    if roles.critics:  # gathering a sharded model's weights costs a collective: only for critics
        with torch.no_grad(), roles.run.full_weights():
            for name, critic in roles.critics.items():
                experience.old_values[name], _ = token_values(critic, pack_samples(sequences, n)).as_matrix()
    greedy = greedy_rollout(config, roles.sampler, prompts)
    macros = macro_action_ids(rollout, config.macro_actions, config.macro_size, roles.tokenizer)
    channel = functools.partial(advantage_targets, config, experience, prompts, greedy, macros)
    per_token = config.dense_rewards and "gamma" in config.estimator.reads  # estimators of per-token rewards
    dense = dense_token_rewards(rewards, rollout, roles.tokenizer) if per_token else None
    experience.targets = channel(
        rewards.rewards, roles.source, experience.old_values.get("critic"), roles.kl.coef, dense
    )
    if costs is not None:  # the cost carries +β·KL, so (A_r − λ A_c) / (1 + λ) carries β·KL
        cost_targets = channel(costs, roles.costs, experience.old_values.get("cost_critic"), -roles.kl.coef)
        experience.targets = roles.multiplier.combine(experience.targets, cost_targets)
    return experience


# ---- 4. loss and update(s) -------------------------------------------------------------------------


def update_policy(config: OnlineConfig, run: Run, experience: Experience, kl_coef: float, sums: MetricSums):
    """``updates_per_rollout`` optimizer steps on the rollout (the last one is ``run.end_step``'s).

    π_old is the policy at the start of the update, so the first pass has ratio 1 and later
    passes clip; with async rollouts it is the sampler that drew the stale samples instead, so
    the ratio corrects for the update in between. Returns the last pass's loss and tokens."""
    old_logps = experience.sampler_logps if config.async_rollouts else None
    for update in range(config.updates_per_rollout):
        total, tokens, first_pass = loss_pass(config, run, experience, old_logps, kl_coef, sums)
        old_logps = first_pass if old_logps is None else old_logps
        if update < config.updates_per_rollout - 1:
            run.apply_gradients(distributed.global_sum(total))
    return total, tokens


# ---- 5. end of step ----------------------------------------------------------------------------------


def step_metrics(config: OnlineConfig, roles: Roles, rollout, rewards, experience: Experience) -> dict[str, float]:
    """What a person watching the run wants to see, besides the losses' own diagnostics."""
    mask = rollout.mask
    per_sample = {name: float(t.float().mean()) for name, t in experience.targets.items() if t.dim() == 1}
    per_sample.pop("success_rate", None)
    return {
        "reward_std": float(rewards.rewards.std()) if len(rewards.rewards) > 1 else 0.0,
        "zero_variance_groups": float(zero_variance_groups(rewards.rewards, config.sampling.n).float().mean()),
        "response_length": float(mask.sum(1).mean()),
        "distinct_2": distinct_n(rollout.texts, 2),
        "stopped": sum(r != "length" for r in rollout.stop_reasons) / len(rollout.stop_reasons),
        "generate_tokens_per_second": float(mask.sum()) / max(1e-9, rollout.timings["generate_seconds"]),
        **(
            {"rollout_worker_restarts": float(roles.sampler.engine.restarts)}
            if config.distributed.rollout_workers
            else {}
        ),
        **({"reward_worker_restarts": float(roles.source.restarts)} if config.distributed.reward_workers else {}),
        **per_sample,
    }


class KLCoefficient:
    """β of the KL term, fixed or adapted toward ``kl_target`` (Ziegler et al. 2019) from the whole
    batch's KL, so every rank keeps the same β; an adapted β resumes where the run had taken it."""

    def __init__(self, config: OnlineConfig, run: Run):
        self.coef, self.run = config.kl_coef, run
        self.control = None
        if config.kl_target > 0:
            self.control = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
            if "kl_control" in run.resumed_files:
                self.coef = self.control.coef = float(run.resumed_files["kl_control"]["coef"])

    def observe(self, experience: Experience, metrics: dict[str, float]) -> None:
        """Log this step's KL and β; adapt β for the next step."""
        if experience.kl is None:
            return
        metrics.update(kl=float(experience.kl.sum(-1).mean()), kl_coef=self.coef)
        if self.control is not None:
            observed = distributed.mean_over_ranks({"kl": metrics["kl"]})["kl"]
            self.coef = self.control.update(observed, int(distributed.global_sum(len(experience.sequences))))
            self.run.save_with_checkpoint("kl_control", {"coef": torch.tensor(self.coef, dtype=torch.float64)})

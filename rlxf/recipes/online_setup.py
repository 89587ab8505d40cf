"""What `rlxf online` builds before its loop: the prompts, and the roles (rollout engine, reward
source, reference, critic) in the trainer or on Ray workers, as the config asks."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

from torch import Tensor, nn

from rlxf.config import ConfigError, DataSection
from rlxf.data import tasks as task_sets
from rlxf.data.formats import read_prompts
from rlxf.data.records import Prompt
from rlxf.models import is_empty, load_causal_lm, load_reward_model, load_tokenizer, resolve_model_path
from rlxf.models.lora import is_lora, lora_config
from rlxf.models.packing import use_packed_attention
from rlxf.models.reference import Reference
from rlxf.recipes.common import build_policy, encoder_for, report_bad_rows, say
from rlxf.recipes.online_config import OnlineConfig, RewardSection, SafetySection, TaskSection
from rlxf.rewards.registry import combined
from rlxf.rollout import HFEngine
from rlxf.rollout.vllm_engine import VLLMEngine, engine_weights
from rlxf.train.data_parallel import start_device


def load_task(task: TaskSection, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """Training and held-out prompts."""
    if task.name == "arithmetic":
        train, held = _arithmetic(task, seed)
    elif task.eval_path:
        train, held = _task_file(task, task.path), _task_file(task, task.eval_path)
    else:
        prompts = _task_file(task, task.path)
        held_count = held_out_count(task, len(prompts))
        train, held = prompts[: len(prompts) - held_count], prompts[len(prompts) - held_count :]
    train = train[: task.limit] if task.limit else train
    if task.system_prompt:
        for prompt in train + held:
            prompt.messages = [{"role": "system", "content": task.system_prompt}, *prompt.messages]
    return train, held


def _task_file(task: TaskSection, path: str) -> list[Prompt]:
    if task.name == "file":
        prompts, bad = read_prompts(path, on_bad_row=task.on_bad_row)
        report_bad_rows(bad, Path(path))
        return prompts
    return {"gsm8k": task_sets.gsm8k, "mbpp": task_sets.mbpp}[task.name](path)


def held_out_count(task: TaskSection, prompts: int) -> int:
    """task.eval_count of the task's prompts, but never more than two fifths of them (a small
    file, or the 100 one-digit sums, would otherwise be all held out), said when it is fewer."""
    count = min(task.eval_count, 2 * prompts // 5)
    if count < task.eval_count:
        say(
            f"task {task.name}: holding out {count} of {prompts} prompts (two fifths at most), not task.eval_count={task.eval_count}"
        )
    return count


def check_batch_fits(train_prompts: list[Prompt], batch_size: int, task: TaskSection) -> None:
    """A batch of prompts the training prompts cannot fill is an error before any model loads."""
    if len(train_prompts) < batch_size:
        raise ConfigError(
            f"task {task.name}: {len(train_prompts)} training prompts cannot fill one batch of "
            f"train.batch_size={batch_size} prompts"
        )


def check_reward_columns(rewards: list[RewardSection], prompts: list[Prompt]) -> None:
    """Every column a reward source reads is in every prompt, checked before any generation."""
    for section in rewards:
        for column in section.columns():
            lacking = next((p for p in prompts if column not in p.context), None)
            if lacking is not None:
                has = sorted(lacking.context) or "no other columns"
                raise ConfigError(
                    f"reward {section.kind} reads the column {column!r}, which {lacking.source or 'a prompt'} lacks "
                    f"(it has {has})"
                )


def _arithmetic(task: TaskSection, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    low = 0 if task.digits == 1 else 10 ** (task.digits - 1)
    distinct = (10**task.digits - low) ** 2  # 1-digit: only 100 problems, so train on the rest
    held_count = held_out_count(task, distinct)
    held = task_sets.arithmetic(held_count, digits=task.digits, operation=task.operation, seed=seed + 1)
    train = task_sets.arithmetic(
        min(task.count, distinct - held_count),
        digits=task.digits,
        operation=task.operation,
        seed=seed,
        exclude={p.messages[-1]["content"] for p in held},
    )
    return train, held


def data_limits(config: OnlineConfig) -> DataSection:
    """Prompt and completion budget for the chat encoder."""
    return DataSection(max_length=1024 + config.sampling.max_new_tokens, max_prompt_length=1024)


# ---- roles ---------------------------------------------------------------------------------------


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


def vllm_engine(config: OnlineConfig, encoder) -> VLLMEngine:
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


def worker_engine(config: OnlineConfig) -> HFEngine | VLLMEngine:
    """A rollout worker's engine: vLLM, or an HF engine on its own copy of the policy, built as
    the trainer builds it."""
    if config.sampling.engine == "vllm":
        return vllm_engine(config, encoder_for(load_tokenizer(config.policy.name), data_limits(config)))
    policy, tokenizer = build_policy(config.policy, config.train.seed)
    return HFEngine(policy, encoder_for(tokenizer, data_limits(config)), batch_size=config.sampling.batch_size)


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


def safety_test_prompts(safety: SafetySection, held: list[Prompt], train: list[Prompt]) -> list[Prompt]:
    """HC-RLHF's safety-test prompts: safety.test_path, else the task's held-out prompts; none of them a
    training prompt (a test on what the policy trained on would not hold)."""
    if not safety.high_confidence:
        return []
    if not safety.test_path:
        return held
    prompts, bad = read_prompts(safety.test_path)
    report_bad_rows(bad, Path(safety.test_path))
    trained = {repr(p.messages) for p in train}
    if seen := [p.source for p in prompts if repr(p.messages) in trained]:
        raise ConfigError(f"safety.test_path: {len(seen)} test prompts are training prompts too (first: {seen[0]})")
    return prompts


def reward_function(sections: list[RewardSection]):
    """The configured sources as one (a weighted sum of several)."""
    return combined([s.build() for s in sections], [s.weight for s in sections], [s.normalize for s in sections])


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


def build_critics(config: OnlineConfig) -> dict[str, nn.Module]:
    """The value models an estimator with a critic needs (ppo): the reward's, and the cost's when the
    run has a constraint (Safe RLHF's two critics), by name; none otherwise."""
    if "values" not in config.estimator.needs:
        return {}
    critics = {"critic": build_critic(config, config.critic)}
    if config.safety.constrained:
        critics["cost_critic"] = build_critic(config, config.safety.cost_critic or config.critic)
    return critics


def build_critic(config: OnlineConfig, backbone: str) -> nn.Module:
    """A value model: the backbone (empty: the policy's) with a scalar head, packed attention on (it
    starts where the policy does: it is sharded with it)."""
    critic = load_reward_model(
        backbone or config.policy.name,
        dtype=config.policy.dtype,
        seed=config.train.seed,
        device=start_device(config.distributed.strategy),
    )
    use_packed_attention(critic)
    return critic

"""The loss stage of `rlxf online`: one pass over a rollout's experience in micro-batches, with
the policy loss the config names, the KL term, the entropy bonus and PPO's value loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rlxf.advantages import AdvantageInputs, kl_shaped_rewards
from rlxf.losses.policy import entropy_bonus, kl_loss, truncated_importance_weights
from rlxf.losses.reduce import aggregate
from rlxf.losses.value import clipped_value_loss
from rlxf.models.logprobs import TokenLogps, token_logps, token_values
from rlxf.parallel import distributed
from rlxf.recipes.online_rollout import pack_samples, score
from rlxf.train import Run
from rlxf.train.run import MetricSums

CRITIC_RETURNS = {"critic": "returns", "cost_critic": "cost_returns"}
"""Each critic the online loop may train (the cost critic: Safe RLHF's), and the target it regresses on."""


@dataclass
class Experience:
    """One rollout made ready for training: what every update pass over it reads."""

    sequences: list[tuple[list[int], list[int]]]
    mask: Tensor  # (B, T) response tokens
    targets: dict[
        str, Tensor
    ]  # what the advantage estimator gave: advantages (B, T), returns (B, T), trained (B,), ...
    sampler_logps: Tensor  # (B, T) log-probs of the sampled tokens under the policy that drew them
    ref_logps: Tensor | None = None  # (B, T) under the reference
    kl: Tensor | None = None  # (B, T) per-token KL estimates, sampler against reference
    old_values: dict[str, Tensor] = field(default_factory=dict)  # critic name -> (B, T) values before the update (ppo)

    def loss_mask(self) -> Tensor:
        """Tokens the loss averages over: only the samples the estimator marks ``trained`` (rft, nft)."""
        trained = self.targets.get("trained")
        return self.mask if trained is None else self.mask * trained[:, None]


def loss_pass(config, run: Run, experience: Experience, old_logps: Tensor | None, kl_coef: float, sums: MetricSums):
    """One pass over the rollout in micro-batches, accumulating gradients; returns (loss, tokens,
    this pass's log-probs). Losses are divided by the counts of the global batch, over all ranks."""
    loss_mask = experience.loss_mask()
    counts = {
        "global_tokens": max(1.0, distributed.global_sum(float(loss_mask.sum()))),
        "global_sequences": max(1, int(distributed.global_sum(int((loss_mask.sum(1) > 0).sum())))),
        "max_tokens": config.sampling.max_new_tokens,
    }
    total, tokens, logps = 0.0, 0, torch.zeros_like(experience.mask)
    rows_per_micro = run.micro_batch_size * config.sampling.n
    micros = [
        list(range(i, min(len(experience.sequences), i + rows_per_micro)))
        for i in range(0, len(experience.sequences), rows_per_micro)
    ]
    for micro in run.accumulate(micros):
        packed = pack_samples([experience.sequences[i] for i in micro], config.sampling.n)
        current, values = run.forward(
            policy_and_values, packed, temperature=config.sampling.temperature, with_entropy=config.entropy_coef > 0
        )
        logp, _ = current.as_matrix()
        width = logp.shape[1]
        old = logp.detach() if old_logps is None else old_logps[micro, :width]
        logps[micro, :width] = logp.detach()
        per_token, diagnostics = token_loss(config, experience, micro, logp, old, current, kl_coef)
        mask = loss_mask[micro, :width]
        loss = aggregate(per_token, mask, config.loss_aggregation, **counts)
        for name, critic_values in values.items():
            loss = loss + value_loss_term(
                config, name, critic_values, experience, micro, mask, counts["global_tokens"], sums
            )
        loss.backward()
        total += loss.item()
        sums.add({name: value[mask > 0] for name, value in diagnostics.items()})
        tokens += packed.num_tokens
    return total, tokens, logps


def token_loss(config, experience: Experience, micro, logp: Tensor, old: Tensor, current, kl_coef: float):
    """The per-token loss of one micro-batch: the policy loss (importance-weighted when asked), the
    KL term where the algorithm puts KL in the loss, and the entropy bonus; and its diagnostics."""
    width = logp.shape[1]
    loss_fn = config.loss_fn
    targets = [_rows(experience.targets[name], micro, width) for name in loss_fn.inputs]
    per_token, metrics = loss_fn(logp, old, *targets, **config.loss_options())
    diagnostics = dict(metrics)  # ratio (π_θ / π_old), clip_fraction, ...
    if config.tis_cap > 0:
        weights = truncated_importance_weights(old, experience.sampler_logps[micro, :width], cap=config.tis_cap)
        per_token, diagnostics["tis_weight"] = per_token * weights, weights
    if experience.ref_logps is not None and not config.kl_in_reward:
        kl_term, _ = kl_loss(logp, experience.ref_logps[micro, :width], coef=kl_coef, kind=config.kl_kind)
        per_token = per_token + kl_term
    if config.entropy_coef > 0:
        entropy, _ = current.as_matrix(current.entropy)
        per_token = per_token + entropy_bonus(entropy, coef=config.entropy_coef)
        diagnostics["entropy"] = entropy.detach()
    return per_token, diagnostics


def _rows(target: Tensor, rows, width: int) -> Tensor:
    """A target's rows of a micro-batch, cut to its width when it is per token."""
    return target[rows, :width] if target.dim() == 2 else target[rows]


def policy_and_values(trained: nn.Module, packed, *, temperature: float, with_entropy: bool):
    """The policy's token log-probs and the values of each critic trained beside it (by name)."""
    if isinstance(trained, nn.ModuleDict):
        current = token_logps(trained["policy"], packed, temperature=temperature, with_entropy=with_entropy)
        return current, {name: token_values(trained[name], packed) for name in CRITIC_RETURNS if name in trained}
    return token_logps(trained, packed, temperature=temperature, with_entropy=with_entropy), {}


def value_loss_term(config, name: str, values: TokenLogps, experience: Experience, micro, mask, global_tokens, sums):
    """PPO's clipped value loss of one critic for one micro-batch, weighted and divided by the step's tokens."""
    values, _ = values.as_matrix()
    width = values.shape[1]
    returns = experience.targets[CRITIC_RETURNS[name]][micro, :width]
    value_loss, value_metrics = clipped_value_loss(
        values, experience.old_values[name][micro, :width], returns, clip=config.value_clip
    )
    prefix = "" if name == "critic" else "cost_"
    sums.add(
        {
            f"{prefix}value_loss": value_loss.detach()[mask > 0],
            f"{prefix}value_clipped": value_metrics["value_clipped"][mask > 0],
        }
    )
    return config.value_coef * aggregate(value_loss, mask, "token_mean", global_tokens=global_tokens)


def advantage_targets(
    config,
    experience: Experience,
    prompts,
    greedy,
    macro_ids: Tensor | None,
    rewards: Tensor,
    source,
    values,
    kl_coef: float,
    dense: Tensor | None = None,
) -> dict[str, Tensor]:
    """The estimator's targets for one channel (the reward, or the cost): its values from that
    channel's critic, its greedy baseline scored by that channel's source, ``-kl_coef·KL`` in it
    where the algorithm puts KL in the reward. ``dense`` (B, T) is the part of ``rewards`` that
    per-token estimators see on its own tokens; the rest is on each response's last token."""
    mask = experience.mask
    kl_in_reward = experience.kl if config.kl_in_reward else None
    shaped = kl_shaped_rewards(rewards, mask, kl_in_reward, kl_coef=kl_coef, dense=dense)
    sequence_rewards = rewards if kl_in_reward is None else rewards - kl_coef * kl_in_reward.sum(-1)
    return config.estimator(
        AdvantageInputs(
            rewards=sequence_rewards,
            token_rewards=shaped,
            mask=mask,
            group_size=config.sampling.n,
            greedy_rewards=None if greedy is None else score(source, prompts, greedy).rewards,
            values=values,
            gamma=config.gamma,
            lam=config.lam,
            top_k=config.rft_top_k,
            threshold=config.success_threshold,
            eta=config.sppo_eta,
            macro_ids=macro_ids,
            global_sum=distributed.all_reduce_sum,
        )
    )

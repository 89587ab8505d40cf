"""`rlxf nash`: the game-theoretic preference learners on a language model.

Each step, as named stages: draw a pair per prompt (the policy against its opponent) → ask the
preference oracle P(a ≻ b) → the learner's loss (rlxf.losses.nash) → update. The opponent is what
the learner's paper plays against:

- online_dpo, online_ipo: a second sample of the policy;
- inpo: two samples of the frozen iterate π_t (refreshed every ``anchor_every`` steps);
- nash_md: the geometric mixture π^(1-α) μ^α, sampled token by token (rlxf.rollout.mixture);
- egpo: an extragradient step: a half step from θ_t on pairs of the policy, new pairs drawn at the
  half point, then the full step from θ_t (weights and optimizer state restored) on those;
- nash_mp: a mirror-prox step as two prox phases of ``anchor_every`` policy-gradient steps each,
  both from π_k and anchored at it: against π_k (reaching the half point π_{k+1/2}), then, back at
  π_k's weights and optimizer state, against π_{k+1/2}.

μ is the initial policy. Their exact tabular counterparts, run against the known equilibrium,
are in rlxf.games (docs/games.md). Ends with the held-out win rate over the reference judged by
``eval_oracle``, an oracle the policy did not train against. The frozen iterates of inpo and
nash_mp are not checkpointed: a resumed run takes them afresh from the resumed weights. EGPO draws
both samples from the policy and scores them by token sums (the authors' code can draw from μ and
uses per-token means). One process: no data parallelism and no micro-batches in this loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rlxf.config import DataSection
from rlxf.data import pack
from rlxf.data.records import Prompt
from rlxf.eval.stats import binomial_two_sided_p, mean_interval
from rlxf.losses.nash import PAIR_LOSSES, inpo, nash_md, nash_mp
from rlxf.losses.reduce import sequence_mean
from rlxf.models import completion_logps
from rlxf.recipes.common import build_policy, encoder_for, save_results, say
from rlxf.recipes.nash_config import NashConfig
from rlxf.recipes.nash_learners import LEARNERS
from rlxf.recipes.online_setup import load_task
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.rewards.preference import PreferenceOracle, preference_oracle
from rlxf.rollout import HFEngine
from rlxf.rollout.base import Rollout, SamplingParams
from rlxf.rollout.mixture import GeometricMixtureEngine
from rlxf.train import Run
from rlxf.train.run import MetricSums


@dataclass
class Roles:
    run: Run
    policy: nn.Module
    reference: nn.Module  # μ, frozen
    engine: HFEngine  # samples the live policy
    encoder: Any
    oracle: PreferenceOracle
    train_prompts: list[Prompt]
    held_prompts: list[Prompt]
    tokenizer: Any
    anchor: nn.Module | None = None  # inpo's π_t, nash_mp's π_k
    opponent: nn.Module | None = None  # nash_mp's half point in its second phase
    anchor_optimizer: dict | None = None  # nash_mp: the optimizer state at π_k


def train_nash(config: NashConfig) -> dict:
    roles = start(config)
    run = roles.run
    for batch in run.steps():
        prompts = [roles.train_prompts[i] for i in batch]
        refresh_anchors(config, roles)
        if config.learner == "egpo":
            metrics, total = extragradient_step(config, roles, prompts)
        else:
            firsts, seconds = draw_pairs(config, roles, prompts)  # 1. rollout
            preference = ask(roles.oracle, prompts, firsts, seconds)  # 2. oracle
            metrics, total = learn(config, roles, prompts, firsts, seconds, preference)  # 3. loss
        run.end_step(total, metrics)  # 4. update
    return finish(config, roles)


def start(config: NashConfig) -> Roles:
    train_prompts, held_prompts = load_task(config.task, config.train.seed)
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    say(f"{config.learner} ({LEARNERS[config.learner]}): {len(train_prompts)} prompts, {len(held_prompts)} held out")
    policy, tokenizer = build_policy(config.policy, config.train.seed)
    encoder = encoder_for(tokenizer, DataSection(max_length=1024 + config.max_new_tokens, max_prompt_length=1024))
    reference = frozen_copy(policy)
    run = Run(output_dir, policy, config.train, num_examples=len(train_prompts), name=config.learner,
              tokenizer=tokenizer, progress_keys=("loss", "preference"))  # fmt: skip
    engine = HFEngine(policy, encoder)
    return Roles(run, policy, reference, engine, encoder, preference_oracle(config.oracle), train_prompts,
                 held_prompts, tokenizer)  # fmt: skip


def frozen_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model).eval()
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def refresh_anchors(config: NashConfig, roles: Roles) -> None:
    """inpo: π_t ← π every anchor_every steps. nash_mp: every 2·anchor_every steps π_k ← π (the
    first prox phase plays against π_k); halfway, the half point π_{k+1/2} ← π becomes the
    opponent and the policy goes back to π_k's weights and optimizer state, from which mirror prox
    takes its full step. A run resumed between refreshes takes them from the resumed weights."""
    step, every = roles.run.step, config.anchor_every
    if config.learner == "inpo" and (step % every == 0 or roles.anchor is None):
        roles.anchor = frozen_copy(roles.policy)
    if config.learner != "nash_mp":
        return
    if step % (2 * every) == 0 or roles.anchor is None:
        roles.anchor = roles.opponent = frozen_copy(roles.policy)
        roles.anchor_optimizer = copy.deepcopy(roles.run.optimizer.state_dict())
    elif step % (2 * every) == every:
        roles.opponent = frozen_copy(roles.policy)
        roles.policy.load_state_dict(roles.anchor.state_dict())
        roles.run.optimizer.load_state_dict(copy.deepcopy(roles.anchor_optimizer))


def sampling(config: NashConfig, n: int = 1) -> SamplingParams:
    return SamplingParams(n=n, max_new_tokens=config.max_new_tokens, temperature=config.temperature)


def draw_pairs(config: NashConfig, roles: Roles, prompts: list[Prompt]) -> tuple[Rollout, Rollout]:
    """(a, b) per prompt: the policy's sample and its opponent's (inpo: two of π_t's)."""
    messages = [p.messages for p in prompts]
    if config.learner in ("online_dpo", "online_ipo", "egpo"):
        both = roles.engine.generate(messages, sampling(config, n=2))
        return _rows(both, 0), _rows(both, 1)
    if config.learner == "inpo":
        both = HFEngine(roles.anchor, roles.encoder).generate(messages, sampling(config, n=2))
        return _rows(both, 0), _rows(both, 1)
    if config.learner == "nash_md":
        opponent = GeometricMixtureEngine(roles.policy, roles.reference, roles.encoder, alpha=config.mixture)
    else:  # nash_mp
        opponent = HFEngine(roles.opponent, roles.encoder)
    return roles.engine.generate(messages, sampling(config)), opponent.generate(messages, sampling(config))


def _rows(rollout: Rollout, sample: int) -> Rollout:
    """Sample ``sample`` of each prompt of a rollout of two per prompt."""
    keep = list(range(sample, len(rollout.texts), 2))
    return Rollout(
        [rollout.prompt_ids[i] for i in keep], [rollout.completion_ids[i] for i in keep], rollout.logprobs[keep],
        rollout.mask[keep], [rollout.texts[i] for i in keep], [rollout.stop_reasons[i] for i in keep],
        [rollout.prompt_index[i] for i in keep],
    )  # fmt: skip


def ask(oracle: PreferenceOracle, prompts: list[Prompt], firsts: Rollout, seconds: Rollout) -> Tensor:
    return oracle.prefer([p.messages for p in prompts], firsts.texts, seconds.texts).float()


def logps(model: nn.Module, rollout: Rollout, *, grad: bool) -> Tensor:
    """(B,) log π(y|x) summed over each completion's tokens."""
    batch = pack(list(zip(rollout.prompt_ids, rollout.completion_ids)))
    with torch.set_grad_enabled(grad):
        values, _ = completion_logps(model, batch)
    return values


def learn(config: NashConfig, roles: Roles, prompts, firsts: Rollout, seconds: Rollout, preference: Tensor):
    """The learner's loss on one batch of pairs, back-propagated; (metrics, loss)."""
    policy, reference, beta = roles.policy, roles.reference, config.beta
    ref_a = logps(reference, firsts, grad=False)
    if config.learner in ("nash_md", "nash_mp"):
        logp = logps(policy, firsts, grad=True)
        if config.learner == "nash_md":
            per_sample, metrics = nash_md(logp, ref_a, preference, beta=beta)
        else:
            anchor = logps(roles.anchor, firsts, grad=False)
            per_sample, metrics = nash_mp(logp, ref_a, anchor, preference, beta=beta, eta=config.eta)
    else:
        logp_a, logp_b = logps(policy, firsts, grad=True), logps(policy, seconds, grad=True)
        ref_b = logps(reference, seconds, grad=False)
        if config.learner == "inpo":
            old_a, old_b = logps(roles.anchor, firsts, grad=False), logps(roles.anchor, seconds, grad=False)
            per_sample, metrics = _inpo_expected(config, logp_a, logp_b, ref_a, ref_b, old_a, old_b, preference)
        else:  # egpo's target with a, b and the opponent all from one policy: P(a ≻ b) - 1/2 (the authors' code)
            target = preference - 0.5 if config.learner == "egpo" else preference
            per_sample, metrics = PAIR_LOSSES[config.learner](logp_a, logp_b, ref_a, ref_b, target, beta=beta)
    loss = sequence_mean(per_sample, len(prompts))
    loss.backward()
    sums = MetricSums()
    sums.add({**metrics, "preference": preference})
    unparsed = getattr(roles.oracle, "unparsed", None)  # an LLM judge's unreadable verdicts, counted as ties
    return sums.means() | ({"oracle_unparsed": float(unparsed)} if unparsed is not None else {}), loss.item()


def _inpo_expected(config: NashConfig, logp_a, logp_b, ref_a, ref_b, old_a, old_b, preference):
    """INPO's loss in expectation over the oracle's label: a wins with probability p."""
    kwargs = {"eta": config.eta, "tau": config.beta}
    a_wins, metrics = inpo(logp_a, logp_b, ref_a, ref_b, old_a, old_b, **kwargs)
    b_wins, _ = inpo(logp_b, logp_a, ref_b, ref_a, old_b, old_a, **kwargs)
    return preference * a_wins + (1 - preference) * b_wins, metrics


def extragradient_step(config: NashConfig, roles: Roles, prompts):
    """EGPO: half step on the policy's pairs, pairs drawn at the half point, then the full step
    from the saved weights and optimizer state on those pairs."""
    run, policy = roles.run, roles.policy
    saved_weights = copy.deepcopy(policy.state_dict())
    saved_optimizer = copy.deepcopy(run.optimizer.state_dict())
    firsts, seconds = draw_pairs(config, roles, prompts)
    learn(config, roles, prompts, firsts, seconds, ask(roles.oracle, prompts, firsts, seconds))
    run.apply_gradients(0.0)  # θ_{t+1/2}
    firsts, seconds = draw_pairs(config, roles, prompts)
    preference = ask(roles.oracle, prompts, firsts, seconds)
    policy.load_state_dict(saved_weights)
    run.optimizer.load_state_dict(saved_optimizer)
    return learn(config, roles, prompts, firsts, seconds, preference)


def win_rate(config: NashConfig, roles: Roles) -> dict:
    """Held-out win rate of the policy over the reference, each sampling once with the same seed,
    judged by ``eval_oracle`` (its P(policy ≻ reference) averaged), with a sign test on the decided."""
    if not config.eval_oracle or not roles.held_prompts:
        say("no held-out win rate: " + ("no eval_oracle given" if not config.eval_oracle else "no held-out prompts"))
        return {}
    messages = [p.messages for p in roles.held_prompts]
    torch.manual_seed(config.train.seed + 1)
    policy = roles.engine.generate(messages, sampling(config))
    torch.manual_seed(config.train.seed + 1)
    reference = HFEngine(roles.reference, roles.encoder).generate(messages, sampling(config))
    judged = preference_oracle(config.eval_oracle).prefer(messages, policy.texts, reference.texts).tolist()
    estimate = mean_interval(judged)
    wins, losses = sum(p > 0.5 for p in judged), sum(p < 0.5 for p in judged)
    return {
        "win_rate": estimate.value,
        "win_rate_interval": [estimate.low, estimate.high],
        "prompts": len(judged),
        "p_value_vs_even": binomial_two_sided_p(wins, wins + losses),
        "judge": config.eval_oracle,
    }


def finish(config: NashConfig, roles: Roles) -> dict:
    run = roles.run
    results = {"steps": run.step, "learner": config.learner, "held_out": win_rate(config, roles)}
    if results["held_out"]:
        run.log_eval({k: v for k, v in results["held_out"].items() if k != "judge"})
        say(f"{config.learner}: held-out win rate over the reference {results['held_out']['win_rate']:.3f}")
    run.finish()
    save_results(roles.run.dir, run.model, roles.tokenizer, results, title=f"{config.learner} policy",
                 recipe=config.learner, base_model=config.policy.name, config=config, trained=run.trained_now)  # fmt: skip
    return results

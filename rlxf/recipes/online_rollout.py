"""The rollout and score stages of `rlxf online`: this rank's prompts, samples from the policy as it
is now, their rewards, DAPO's dynamic sampling, and the held-out greedy evaluation."""

from __future__ import annotations

import bisect
import random
from typing import Callable

import torch
from torch import Tensor

from rlxf.advantages import fixed_macro_ids, ids_from_ends
from rlxf.data.batching import pack_groups
from rlxf.data.records import Prompt
from rlxf.eval.stats import mean_interval, proportion
from rlxf.parallel import distributed
from rlxf.rewards import RewardBatch
from rlxf.rewards.base import mean_of_opinions
from rlxf.rollout import Rollout, SamplingParams
from rlxf.rollout.vllm_engine import VLLMEngine


class PolicySampler:
    """Generation from the policy as the trainer holds it now: a sharded policy's weights are
    gathered first (every rank must call together), and a vLLM engine is given the weights of the
    latest step before it generates."""

    def __init__(self, engine, run, engine_weights: Callable[[], dict[str, Tensor]]):
        self.engine, self.run, self.engine_weights = engine, run, engine_weights
        self.pushed_at = 0  # the step whose weights a vLLM engine holds (it starts with the initial ones)

    def generate(self, prompts: list[Prompt], sampling: SamplingParams, seeds=None) -> Rollout:
        with self.run.full_weights():
            self._sync()
            return self.engine.generate([p.messages for p in prompts], sampling, seeds=seeds)

    def evaluate(self, source, prompts: list[Prompt], max_new_tokens: int, others=None) -> dict | None:
        """Greedy evaluation on the main rank (the others go on and wait for it at their next collective)."""
        with self.run.full_weights():
            if not distributed.is_main() or not prompts:
                return None
            self._sync()
            return greedy_eval(self.engine, source, prompts, max_new_tokens, others)

    def sample_scores(self, source, prompts: list[Prompt], sampling: SamplingParams, seeds) -> list[float] | None:
        """Scores of sampled completions on the main rank (None elsewhere), as :meth:`evaluate` runs."""
        with self.run.full_weights():
            if not distributed.is_main() or not prompts:
                return None
            self._sync()
            rollout = self.engine.generate([p.messages for p in prompts], sampling, seeds=seeds)
            return score(source, prompts, rollout).rewards.tolist()

    def _sync(self) -> None:
        if isinstance(self.engine, VLLMEngine) and self.pushed_at != self.run.step:
            self.engine.load_weights(self.engine_weights())
            self.pushed_at = self.run.step


def rank_prompts(train_prompts: list[Prompt], batch: list[int], seed: int, step: int):
    """This rank's prompts of a step's global batch, and each one's sampling seed."""
    positions = distributed.shard(list(range(len(batch))))
    return [train_prompts[batch[i]] for i in positions], [sample_seed(seed, step, i) for i in positions]


def sample_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of a prompt at a position of a step's global batch: the same samples
    however many ranks share the batch."""
    return random.Random(f"{seed}:{step}:{position}").getrandbits(63)


def score(source, prompts: list[Prompt], rollout: Rollout) -> RewardBatch:
    """Rewards for every sample, with each prompt's context (answer, tests) spread over its samples."""
    samples = [prompts[i] for i in rollout.prompt_index]
    keys = set().union(*(p.context for p in samples)) if samples else set()
    context = {key: [p.context.get(key) for p in samples] for key in keys}
    context["conversational"] = [p.conversational for p in samples]
    context["completion_ids"] = rollout.completion_ids  # as TRL passes them to reward functions
    context["prompt_index"] = rollout.prompt_index  # which samples share a prompt (SPO's win rate)
    return source.score([p.messages for p in samples], rollout.texts, **context)


def pack_samples(sequences: list[tuple[list[int], list[int]]], group_size: int):
    """Samples of one prompt are adjacent and share its tokens: lay each prompt down once."""
    groups = [
        (sequences[start][0], [c for _, c in sequences[start : start + group_size]])
        for start in range(0, len(sequences), group_size)
    ]
    return pack_groups(groups)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(G,) True where every sample of a prompt got the same reward: no signal for group methods."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) == 0


Part = tuple[list[Prompt], Rollout, RewardBatch]  # prompts, their samples, the samples' rewards


def signal_groups(parts: list[Part], group_size: int) -> int:
    return sum(int((~zero_variance_groups(rewards.rewards, group_size)).sum()) for _, _, rewards in parts)


def dynamic_sampling(first: Part, draw: Callable[[int], Part], group_size: int, max_rounds: int) -> list[Part]:
    """DAPO's dynamic sampling (Yu et al. 2025, Sec. 3.2): draw more prompts while the batch has
    fewer groups with differing rewards than prompts, for at most ``max_rounds`` rollouts. Every
    rank draws as long as any rank is short, so all ranks make the same generation calls (a
    sharded policy gathers its weights for each, a collective). ``draw(round)`` makes one more part."""
    parts, wanted = [first], len(first[0])
    while len(parts) < max_rounds and distributed.global_sum(max(0, wanted - signal_groups(parts, group_size))) > 0:
        parts.append(draw(len(parts)))
    return parts


def extra_prompts(train_prompts: list[Prompt], count: int, seed: int, step: int, round_: int) -> list[Prompt]:
    """Prompts drawn for another round of dynamic sampling, different on every rank."""
    draw = random.Random(f"{seed}:{step}:{distributed.rank()}:{round_}")
    return [train_prompts[draw.randrange(len(train_prompts))] for _ in range(count)]


def merge_rollouts(
    parts: list[Part], keep_groups: int, group_size: int
) -> tuple[list[Prompt], Rollout, RewardBatch, int]:
    """The batch dynamic sampling trains on: the first ``keep_groups`` groups whose rewards differ,
    filled up to ``keep_groups`` with zero-variance groups (first rollout first) when too few differ,
    so the batch never shrinks; returns how many were filled that way."""
    groups = [
        (bool(flat[g]), prompt, rollout, rewards, g)
        for part_prompts, rollout, rewards in parts
        for flat in [zero_variance_groups(rewards.rewards, group_size)]
        for g, prompt in enumerate(part_prompts)
    ]
    with_signal = [group for group in groups if not group[0]][:keep_groups]
    filled = [group for group in groups if group[0]][: keep_groups - len(with_signal)]
    chosen = with_signal + filled
    rows = [(rollout, rewards, g * group_size + j) for _, _, rollout, rewards, g in chosen for j in range(group_size)]
    return [c[1] for c in chosen], _merged_rollout(parts, rows, group_size), _merged_rewards(parts, rows), len(filled)


def _merged_rollout(parts: list[Part], rows, group_size: int) -> Rollout:
    width = max(int(r.mask[i].sum()) for r, _, i in rows)
    logprobs, mask = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for row, (rollout, _, i) in enumerate(rows):
        length = len(rollout.completion_ids[i])
        logprobs[row, :length] = rollout.logprobs[i, :length]
        mask[row, :length] = 1
    return Rollout(
        [r.prompt_ids[i] for r, _, i in rows],
        [r.completion_ids[i] for r, _, i in rows],
        logprobs,
        mask,
        [r.texts[i] for r, _, i in rows],
        [r.stop_reasons[i] for r, _, i in rows],
        [k // group_size for k in range(len(rows))],
        {"generate_seconds": sum(p[1].timings["generate_seconds"] for p in parts)},
    )


def _merged_rewards(parts: list[Part], rows) -> RewardBatch:
    return RewardBatch(
        torch.stack([b.rewards[i] for _, b, i in rows]),
        {name: torch.stack([b.by_source[name][i] for _, b, i in rows]) for name in parts[0][2].by_source},
        [b.details[i] for _, b, i in rows],
        span_rewards=None if parts[0][2].span_rewards is None else [b.span_rewards[i] for _, b, i in rows],
    )


def dense_token_rewards(rewards: RewardBatch, rollout: Rollout, tokenizer) -> Tensor | None:
    """(B, T) the fine-grained sources' segment rewards, each on the completion token where the
    decoded text first reaches its segment's end (Wu et al. 2023 put it on the segment's last token);
    None when no source gave segments."""
    if rewards.span_rewards is None:
        return None
    dense = torch.zeros_like(rollout.mask, dtype=torch.float32)
    for row, (ids, spans) in enumerate(zip(rollout.completion_ids, rewards.span_rewards)):
        if not spans:
            continue
        lengths = prefix_lengths(ids, tokenizer)  # once per row: token-level sources give a span per token
        for end, value in spans:
            dense[row, token_ending_at(lengths, end)] += value
    return dense


def prefix_lengths(ids: list[int], tokenizer) -> list[int]:
    """The length of the text decoded from each prefix ids[: k + 1]."""
    return [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]


def token_ending_at(lengths: list[int], end: int) -> int:
    """The first token whose decoded prefix is ``end`` characters long or longer (the last token
    when none is), by bisection over the prefix lengths, as the text was decoded from the ids."""
    return min(bisect.bisect_left(lengths, end), len(lengths) - 1)


@torch.no_grad()
def greedy_eval(engine, source, prompts: list[Prompt], max_new_tokens: int, others=None) -> dict:
    """Mean reward (accuracy for 0/1 verifiers) of greedy completions on held-out prompts, and their
    mean under each of ``others`` (name -> source: the cost, the gold signal), as greedy_<name>."""
    rollout = engine.generate(
        [p.messages for p in prompts], SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    )
    rewards = score(source, prompts, rollout)
    outcomes = rewards.rewards.tolist()
    binary = all(o in (0.0, 1.0) for o in outcomes)
    estimate = proportion(outcomes) if binary else mean_interval(outcomes)
    scored = {name: score(other, prompts, rollout).rewards for name, other in (others or {}).items()}
    return {
        **{key: value for name, values in scored.items() for key, value in _summary(name, values).items()},
        "greedy_reward": float(rewards.rewards.mean()),
        "greedy_interval": [estimate.low, estimate.high],
        "prompts": len(prompts),
        "outcomes": outcomes,
        "greedy_length": float(rollout.mask.sum(1).mean()),
        **{f"greedy_reward/{name}": mean_of_opinions(values) for name, values in rewards.by_source.items()},
        "examples": [
            {"prompt": p.messages[-1]["content"], "completion": t, "reward": float(r)}
            for p, t, r in list(zip(prompts, rollout.texts, rewards.rewards))[:3]
        ],
    }


def _summary(name: str, values: Tensor) -> dict:
    estimate = mean_interval(values.tolist())
    return {
        f"greedy_{name}": estimate.value,
        f"greedy_{name}_interval": [estimate.low, estimate.high],
        f"{name}_outcomes": values.tolist(),
    }


def scalars(results: dict) -> dict:
    """What goes into the metrics log: no per-example lists."""
    return {k: v for k, v in results.items() if k != "examples" and not k.endswith("outcomes")}


PUNCTUATION = tuple(".,;:!?")


def macro_action_ids(rollout: Rollout, kind: str, size: int, tokenizer) -> Tensor | None:
    """MA-RLHF's macro actions of each response (None for ``kind`` none): ``fixed`` n-grams of
    ``size`` tokens, or ``punctuation``-ended ones (a token whose text ends in . , ; : ! ? or holds a
    line break closes its macro action); the last token is always one of its own."""
    if kind == "none":
        return None
    if kind == "fixed":
        return fixed_macro_ids(rollout.mask, size)
    ends = []
    for ids in rollout.completion_ids:
        texts = [tokenizer.decode([token]) for token in ids]
        ends.append([t.rstrip(" ").endswith(PUNCTUATION) or "\n" in t for t in texts])
    return ids_from_ends(ends, rollout.mask.shape[1])

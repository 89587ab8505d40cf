"""Reward workers as Ray actors: reward sources (a reward model, an LLM judge, unit tests)
scoring beside the trainer instead of inside it.

Each worker builds the reward sources once; a batch of completions is split into one
contiguous share per worker, and the shares' reward batches are joined in order. A worker
that dies is replaced and its share scored again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from rlxf.data.records import Message
from rlxf.parallel.actors import ActorPool, PoolWorker, split
from rlxf.rewards.base import RewardBatch


class RewardWorker(PoolWorker):
    """Holds reward sources built by ``source_factory()``."""

    def __init__(self, source_factory: Callable, threads: int):
        super().__init__(threads)
        self.source = source_factory()

    def score(self, prompts, completions, context) -> RewardBatch:
        return self.source.score(prompts, completions, **context)


class RayRewardPool(ActorPool):
    """The reward-source protocol over ``workers`` Ray actors."""

    name = "reward workers"

    def __init__(self, source_factory: Callable, *, workers: int, cpus_per_worker: int = 1, gpus_per_worker=0.0):
        super().__init__(
            RewardWorker,
            (source_factory,),
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
        )

    def score(self, prompts: Sequence[list[Message]], completions: Sequence[str], **context) -> RewardBatch:
        shares = split(len(completions), len(self.workers))

        def send(index: int):
            rows = shares[index]
            return self.workers[index].score.remote(
                [prompts[i] for i in rows],
                [completions[i] for i in rows],
                {key: [values[i] for i in rows] for key, values in context.items()},
            )

        return concat_reward_batches(self.gather({i: send(i) for i, rows in enumerate(shares) if rows}, send))


def concat_reward_batches(parts: Sequence[RewardBatch]) -> RewardBatch:
    """Reward batches of consecutive shares as one."""
    spans = None
    if any(p.span_rewards is not None for p in parts):
        spans = [row for p in parts for row in (p.span_rewards or [[] for _ in p.rewards])]
    return RewardBatch(
        torch.cat([p.rewards for p in parts]),
        {name: torch.cat([p.by_source[name] for p in parts]) for name in parts[0].by_source},
        [detail for p in parts for detail in p.details],
        spans,
        {name: value for p in parts for name, value in p.flags.items()},
    )

"""Rollout workers as Ray actors: generation beside the trainer, with the trainer's weights.

Each worker builds its own copy of the policy and an HF engine once; before every
generation the trainer pushes its trainable weights (the LoRA adapters alone when LoRA is
used) through Ray's object store, so workers always sample from the current policy. A
batch is split into one contiguous share of prompts per worker. A worker that dies is
replaced by a fresh one, given the current weights, and its share is generated again with
the same per-prompt seeds — the run goes on with the samples it would have had.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import torch
from torch import nn

from rlxf.data.records import Message
from rlxf.rollout.base import Rollout, SamplingParams

log = logging.getLogger(__name__)


class RolloutWorker:
    """Holds a policy copy and its engine; ``engine_factory()`` builds both."""

    def __init__(self, engine_factory: Callable, threads: int):
        torch.set_num_threads(threads)
        self.engine = engine_factory()

    def pid(self) -> int:
        return os.getpid()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        from rlxf.train.checkpoint import load_trainable_state

        load_trainable_state(self.engine.model, state)

    def generate(self, prompts, sampling: SamplingParams, seeds) -> Rollout:
        return self.engine.generate(prompts, sampling, seeds=seeds)


class RayRolloutPool:
    """The rollout protocol over ``workers`` Ray actors; ``trained`` is the trainer's policy."""

    def __init__(
        self,
        trained: nn.Module,
        engine_factory: Callable,
        *,
        workers: int,
        cpus_per_worker: int = 1,
        owns_ray: bool = False,
    ):
        import ray

        self.ray, self.trained, self.factory = ray, trained, engine_factory
        self.cpus, self.owns_ray = cpus_per_worker, owns_ray
        self.actor_class = ray.remote(RolloutWorker)
        self.workers = [self._start() for _ in range(workers)]
        self.restarts = 0

    def _start(self):
        return self.actor_class.options(num_cpus=self.cpus).remote(self.factory, self.cpus)

    def worker_pids(self) -> list[int]:
        return self.ray.get([worker.pid.remote() for worker in self.workers])

    def _push_weights(self, workers) -> None:
        from rlxf.train.checkpoint import trainable_state

        state = self.ray.put({name: t.clone() for name, t in trainable_state(self.trained).items()})
        self.ray.get([worker.load_weights.remote(state) for worker in workers])

    def generate(
        self, prompts: Sequence[list[Message]], sampling: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> Rollout:
        shares = _split(len(prompts), len(self.workers))
        parts: list[Rollout | None] = [None] * len(shares)
        pending = [i for i, share in enumerate(shares) if share]
        while pending:
            try:
                self._push_weights([self.workers[i] for i in pending])
                calls = {
                    i: self.workers[i].generate.remote(
                        [prompts[j] for j in shares[i]],
                        sampling,
                        None if seeds is None else [seeds[j] for j in shares[i]],
                    )
                    for i in pending
                }
                for i in list(pending):
                    parts[i] = self.ray.get(calls[i])
                    pending.remove(i)
            except self.ray.exceptions.RayActorError as error:
                for i in pending:  # whichever died: replace the dead, keep the living
                    if not self._alive(self.workers[i]):
                        log.warning("rollout worker %d died (%s); starting a new one", i, type(error).__name__)
                        self.workers[i] = self._start()
                        self.restarts += 1
        return concat_rollouts([p for p in parts if p is not None])

    def _alive(self, worker) -> bool:
        try:
            self.ray.get(worker.pid.remote(), timeout=30)
            return True
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError):
            return False

    def close(self) -> None:
        """Stop the workers (and Ray, when this pool's run started it)."""
        for worker in self.workers:
            self.ray.kill(worker)
        if self.owns_ray:
            self.ray.shutdown()


def _split(count: int, parts: int) -> list[list[int]]:
    """Contiguous shares of ``count`` prompts, as even as they go."""
    size, extra = divmod(count, parts)
    shares, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        shares.append(list(range(start, end)))
        start = end
    return shares


def concat_rollouts(parts: Sequence[Rollout]) -> Rollout:
    """Rollouts of consecutive prompt shares as one, prompt indices renumbered."""
    width = max(p.mask.shape[1] for p in parts)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    offsets, total = [], 0
    for part in parts:
        offsets.append(total)
        total += max(part.prompt_index, default=-1) + 1
    return Rollout(
        [ids for p in parts for ids in p.prompt_ids],
        [ids for p in parts for ids in p.completion_ids],
        torch.cat([pad(p.logprobs) for p in parts]),
        torch.cat([pad(p.mask) for p in parts]),
        [text for p in parts for text in p.texts],
        [reason for p in parts for reason in p.stop_reasons],
        [offset + i for p, offset in zip(parts, offsets) for i in p.prompt_index],
        {
            "generate_seconds": max(p.timings["generate_seconds"] for p in parts),
            "generate_tokens_per_second": sum(float(p.mask.sum()) for p in parts)
            / max(1e-9, max(p.timings["generate_seconds"] for p in parts)),
        },
    )

"""Rollout workers as Ray actors: generation beside the trainer, with the trainer's weights.

Each worker builds its own engine once: an HF engine on its own copy of the policy, or vLLM;
before every generation the trainer pushes its trainable weights (for an HF engine with LoRA,
the adapters alone; vLLM takes the adapted layers merged) through Ray's object store, or with
``weight_sync="broadcast"`` by a torch.distributed broadcast
(:mod:`rlxf.parallel.weight_broadcast`), so workers always sample from the current policy. A
batch is split into one contiguous share of prompts per worker. A worker that dies is
replaced by a fresh one, given the current weights, and its share is generated again with
the same per-prompt seeds — the run goes on with the samples it would have had.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from rlxf.data.records import Message
from rlxf.parallel.actors import ActorPool, PoolWorker, split
from rlxf.rollout.base import Rollout, SamplingParams


class RolloutWorker(PoolWorker):
    """Holds a policy copy and its engine; ``engine_factory()`` builds both."""

    def __init__(self, engine_factory: Callable, threads: int):
        super().__init__(threads)
        self.engine = engine_factory()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.engine.load_weights(state)

    def join_weight_group(self, host: str, port: int, rank: int, size: int, backend: str) -> None:
        from rlxf.parallel.weight_broadcast import open_group

        self.weight_group = open_group(host, port, rank, size, backend)

    def receive_weights(self, sent) -> None:
        self.engine.receive_weights(self.weight_group, sent)

    def generate(self, prompts, sampling: SamplingParams, seeds) -> Rollout:
        return self.engine.generate(prompts, sampling, seeds=seeds)


class RayRolloutPool(ActorPool):
    """The rollout protocol over ``workers`` Ray actors; ``trained`` is the trainer's policy."""

    def __init__(
        self,
        trained: nn.Module,
        engine_factory: Callable,
        *,
        workers: int,
        cpus_per_worker: int = 1,
        gpus_per_worker: float = 0.0,
        weight_sync: str = "object_store",
        asynchronous: bool = False,
        weights_of: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
    ):
        """``asynchronous``: the trainer updates while a rollout is in flight, so a share sent again
        after a worker died needs a snapshot of the weights it was started with. ``weights_of``:
        what the workers' engines take, made from ``trained`` (default: its trainable weights;
        vLLM engines take LoRA layers merged, :func:`rlxf.rollout.vllm_engine.engine_weights`)."""
        super().__init__(
            RolloutWorker,
            (engine_factory,),
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
        )
        self.trained, self.asynchronous, self.weights_of = trained, asynchronous, weights_of
        self.broadcast = None
        if weight_sync == "broadcast":
            from rlxf.parallel.distributed import default_device
            from rlxf.parallel.weight_broadcast import WeightBroadcast

            # (not the policy's device: a sharded rank's may still be "meta" here)
            self.broadcast = WeightBroadcast(self, "nccl" if default_device().type == "cuda" else "gloo")
            self.broadcast.connect()

    def generate(
        self, prompts: Sequence[list[Message]], sampling: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> Rollout:
        return self.submit(prompts, sampling, seeds=seeds).result()

    def submit(
        self,
        prompts: Sequence[list[Message]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int] | None = None,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> PendingRollout:
        """Start generating with the trainer's current weights, or with ``weights`` (as
        :meth:`PendingRollout.sampler_weights` gave them); ``.result()`` waits for it."""
        shares = split(len(prompts), len(self.workers))
        job = PendingRollout(self, list(prompts), sampling, seeds, shares, weights)
        job.calls = {i: job.send(i) for i, share in enumerate(job.shares) if share}
        return job

    def current_weights(self):
        """The trainer's weights now, as a push sends them: an object-store reference, or for a
        broadcast the live parameters (a copy when training goes on during the rollout). A sharded
        trainer's are gathered whole first: a collective, so every rank submits at the same step."""
        from rlxf.models.state import trainable_state
        from rlxf.parallel.distributed import gathered
        from rlxf.parallel.weight_broadcast import live_trainable

        if self.weights_of is not None:  # made for the engines: fresh tensors, safe to train on meanwhile
            weights = gathered(self.weights_of(self.trained))
            return weights if self.broadcast is not None else self.ray.put(weights)
        if self.broadcast is None:
            return self.ray.put(gathered(trainable_state(self.trained)))
        live = live_trainable(self.trained)
        if any(isinstance(t, DTensor) for t in live.values()):
            return gathered({name: t.detach() for name, t in live.items()})
        return {name: t.detach().clone() for name, t in live.items()} if self.asynchronous else live


class PendingRollout:
    """A generation in flight on the pool's workers, one share of the prompts each."""

    def __init__(
        self, pool: RayRolloutPool, prompts, sampling: SamplingParams, seeds, shares: list[list[int]], weights
    ):
        self.pool, self.prompts, self.sampling, self.seeds, self.shares = pool, prompts, sampling, seeds, shares
        if weights is None:
            weights = pool.current_weights()
        elif pool.broadcast is None:
            weights = pool.ray.put(weights)
        self.weights = weights  # a share sent again uses these too
        if pool.broadcast is not None:
            pool.broadcast.push(self.weights)
        self.calls: dict[int, object] = {}

    def send(self, index: int, *, replaced: bool = False):
        """The weights, then the share's prompts, to one worker (an actor runs its calls in order)."""
        worker, share = self.pool.workers[index], self.shares[index]
        if self.pool.broadcast is None:
            worker.load_weights.remote(self.weights)
        elif replaced:  # the replacement joins a new group with the others and is sent the weights
            self.pool.broadcast.connect()
            self.pool.broadcast.push(self.weights)
        seeds = None if self.seeds is None else [self.seeds[j] for j in share]
        return worker.generate.remote([self.prompts[j] for j in share], self.sampling, seeds)

    def sampler_weights(self) -> dict[str, torch.Tensor]:
        """The weights this rollout samples with, whole: what a checkpoint keeps so that a resumed
        run draws this rollout again."""
        return self.pool.ray.get(self.weights) if self.pool.broadcast is None else dict(self.weights)

    def result(self) -> Rollout:
        """The whole rollout; a share whose worker died is generated again on its replacement."""
        return concat_rollouts(self.pool.gather(self.calls, lambda index: self.send(index, replaced=True)))


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

"""A fixed number of identical Ray actors that are replaced when they die.

Rollout workers and reward workers are such pools: each actor builds its heavy state (a policy
copy, a reward model) once from a factory, and work is split into one contiguous share per
actor. When a call fails because its actor died, the actor is replaced by a fresh one and the
share is sent again, so nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


class PoolWorker:
    """Base of a pool's actor classes: its CPU threads, and a ``pid`` to check it is alive."""

    def __init__(self, threads: int):
        torch.set_num_threads(threads)

    def pid(self) -> int:
        return os.getpid()


class ActorPool:
    """``workers`` actors of ``actor_class`` (a plain class), each made with ``(*args, cpus)`` and
    given ``cpus`` CPUs and ``gpus`` GPUs (a fraction below 1 lets actors share a GPU)."""

    def __init__(self, actor_class: type, args: tuple, *, workers: int, cpus_per_worker: int, gpus_per_worker=0.0):
        import ray

        self.ray, self.args, self.kind = ray, args, actor_class.__name__
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self.remote_class = ray.remote(actor_class)
        self.workers = [self._start() for _ in range(workers)]
        self.restarts = 0

    def _start(self):
        return self.remote_class.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(*self.args, self.cpus)

    def replace_if_dead(self, index: int) -> bool:
        """Start a new actor in place of worker ``index`` if it no longer answers. One that failed
        while starting stops the run with its error: a fresh one would fail the same way."""
        try:
            self.ray.get(self.workers[index].pid.remote(), timeout=30)
            return False
        except self.ray.exceptions.RayActorError as error:
            if error.actor_init_failed:
                raise RuntimeError(f"{self.kind} {index} could not start: {error}") from error
        except self.ray.exceptions.GetTimeoutError:
            pass
        log.warning("%s %d died; starting a new one", self.kind, index)
        self.ray.kill(self.workers[index])
        self.workers[index] = self._start()
        self.restarts += 1
        return True

    def gather(self, calls: dict[int, Any], resend: Callable[[int], Any]) -> list[Any]:
        """Results of one call per worker, in worker order; a call whose worker died is sent
        again (``resend(index)`` returns the new call) to its replacement."""
        parts: dict[int, Any] = {}
        while len(parts) < len(calls):
            for i in sorted(calls.keys() - parts.keys()):
                try:
                    parts[i] = self.ray.get(calls[i])
                except self.ray.exceptions.RayActorError:
                    self.replace_if_dead(i)
                    calls[i] = resend(i)
        return [parts[i] for i in sorted(parts)]

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)


def split(count: int, parts: int) -> list[list[int]]:
    """Contiguous shares of ``count`` items, as even as they go."""
    size, extra = divmod(count, parts)
    shares, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        shares.append(list(range(start, end)))
        start = end
    return shares

"""Trainer weights to rollout workers by a torch.distributed broadcast (NCCL on GPU, gloo on CPU).

Ray's object store copies the weights into shared memory and every worker copies them out
again; a broadcast sends them straight from the trainer's parameters into the workers'
(GPU to GPU with NCCL), the way OpenRLHF and verl update their generation engines. The trainer
is rank 0 of a process group of its own, apart from any training group; each parameter is
broadcast in place, so no copy of the model is made on either side. When a worker is
replaced, every worker joins a new group (a new "generation") with the replacement.
"""

from __future__ import annotations

import datetime
import logging
import socket
from typing import Mapping

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=10)


def free_address() -> tuple[str, int]:
    """This host's address and a free port for a group's store."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return socket.gethostbyname(socket.gethostname()), port


def open_group(host: str, port: int, rank: int, size: int, backend: str) -> dist.ProcessGroup:
    """A standalone process group (not the default one): rank 0 hosts its store at ``host:port``.
    Blocks until all ``size`` ranks have joined."""
    store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=TIMEOUT, wait_for_workers=False)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, size)
    return dist.ProcessGroupGloo(store, rank, size, TIMEOUT)


Description = list[tuple[str, tuple[int, ...], str]]
"""What a push sends, in order: each tensor's name, shape and dtype (``"float32"``)."""


def describe(tensors: Mapping[str, torch.Tensor]) -> Description:
    return [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in tensors.items()]


def receive(group: dist.ProcessGroup, targets: Mapping[str, torch.Tensor], sent: Description) -> None:
    """A worker's side of one push: each tensor the trainer sends (``sent``, in its order)
    received in place into ``targets[name]`` (the engine's own parameter, or a fresh tensor)."""
    for name, shape, dtype in sent:
        target = targets.get(name)
        if target is None or tuple(target.shape) != tuple(shape) or str(target.dtype) != f"torch.{dtype}":
            found = (
                f"{tuple(target.shape)} {str(target.dtype).removeprefix('torch.')}" if target is not None else "missing"
            )
            raise RuntimeError(f"weight broadcast: the worker's {name} is {found}, the trainer sends {shape} {dtype}")
    with torch.no_grad():
        for name, _, _ in sent:
            group.broadcast(targets[name].data, 0).wait()


class WeightBroadcast:
    """The trainer's side, for a pool of Ray actors that have ``join_weight_group`` and
    ``receive_weights(sent)`` (see :class:`rlxf.rollout.ray_workers.RolloutWorker`)."""

    def __init__(self, pool, backend: str):
        self.pool, self.backend, self.generation, self.group = pool, backend, -1, None

    def connect(self) -> None:
        """Form a new group of the trainer and every current worker."""
        self.generation += 1
        host, port = free_address()
        size = len(self.pool.workers) + 1
        joins = [
            worker.join_weight_group.remote(host, port, rank, size, self.backend)
            for rank, worker in enumerate(self.pool.workers, start=1)
        ]
        self.group = open_group(host, port, 0, size, self.backend)
        self.pool.ray.get(joins)
        log.debug("weight group %d: %d workers over %s", self.generation, size - 1, self.backend)

    def push(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Every worker's parameters set to ``tensors``; a worker that died on the way is replaced,
        a new group formed and the push done again."""
        sent = describe(tensors)
        while True:
            receives = [worker.receive_weights.remote(sent) for worker in self.pool.workers]
            try:
                for tensor in tensors.values():
                    self.group.broadcast(tensor.detach().contiguous(), 0).wait()
                self.pool.ray.get(receives)
                return
            except (RuntimeError, self.pool.ray.exceptions.RayActorError) as error:
                self.abandon_group()
                replaced = [self.pool.replace_if_dead(i) for i in range(len(self.pool.workers))]
                if not any(replaced):
                    raise
                log.warning("a worker died during a weight broadcast (%s); forming a new group", error)
                self.connect()

    def abandon_group(self) -> None:
        """Tear the group down after a failed broadcast: the surviving workers, blocked waiting
        for the rest of it, get an error instead of waiting out the timeout (and can join the
        next group)."""
        group, self.group = self.group, None
        try:
            group.abort()
        except RuntimeError as error:
            log.debug("aborting the weight group: %s", error)
        del group


def live_trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters themselves (no copies), in the model's order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}

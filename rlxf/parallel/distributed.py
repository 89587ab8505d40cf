"""Ranks of a data-parallel run and what they say to each other, through torch.distributed.

With no process group (a single process) every answer is trivial. Under ``torchrun``
(or any launcher that sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``) each rank joins one
group (NCCL between GPUs, gloo on CPU) and takes its share of every global batch; sums over
ranks turn a rank's counts into the global batch's. Sharded tensors (FSDP2's DTensors) are
gathered whole or laid out as a rank's shard here too.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor


def default_device() -> torch.device:
    """Where this rank's models run: ``RLXF_DEVICE`` when set (cpu, cuda, cuda:N); else this rank's
    GPU (``LOCAL_RANK``) when CUDA is available; else the CPU."""
    if os.environ.get("RLXF_DEVICE"):
        return torch.device(os.environ["RLXF_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_environment() -> bool:
    """Join the process group a launcher described in the environment; True when there is one."""
    if is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    rank_, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        size,
        # under torchrun the launcher hosts the store; a bare launch has rank 0 host it
        is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and rank_ == 0,
        timeout=timedelta(minutes=30),
    )
    # Keys of each restart attempt apart: ranks restarted after a failure would otherwise
    # find the dead ranks' gloo addresses in the store and fail to connect.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    backend = "nccl" if default_device().type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(default_device())
    dist.init_process_group(
        backend, store=dist.PrefixStore(f"rlxf/attempt-{attempt}", store), rank=rank_, world_size=size
    )
    return True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shard(global_batch: list[int]) -> list[int]:
    """This rank's examples of a global batch (strided, so every rank gets a fair share)."""
    return global_batch[rank() :: world_size()]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over ranks, on its own device (NCCL sums on this rank's GPU)."""
    if not is_initialized():
        return value
    wire = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else value.device
    summed = value.to(wire, copy=True)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return summed.to(value.device)


def global_sum(value: float) -> float:
    """A Python number summed over ranks (the number itself in one process)."""
    return float(all_reduce_sum(torch.tensor(float(value), dtype=torch.float64))) if is_initialized() else value


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over ranks (equal shards make this the global-batch mean)."""
    if not is_initialized() or not values:
        return values
    names = sorted(values)
    summed = all_reduce_sum(torch.tensor([float(values[name]) for name in names], dtype=torch.float64))
    return {name: float(total) / world_size() for name, total in zip(names, summed)}


def gathered_equal(value: torch.Tensor) -> torch.Tensor:
    """Every rank's tensor of the same shape, concatenated in rank order (a collective; the
    tensor itself when alone)."""
    if not is_initialized():
        return value
    slots = torch.zeros((world_size(), *value.shape), dtype=value.dtype, device=value.device)
    slots[rank()] = value
    return all_reduce_sum(slots).flatten(0, 1)


def from_main(value: Any) -> Any:
    """The main rank's ``value`` on every rank (a collective; the value itself when alone)."""
    if not is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any) -> Any:
    """Sharded tensors (DTensors) made whole, through nested dicts and lists; a collective."""
    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: gathered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [gathered(v) for v in value]
    return value


def laid_out_like(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``param``: this rank's shard when ``param`` is sharded (a DTensor)."""
    if isinstance(param, DTensor):
        return distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements)
    return full

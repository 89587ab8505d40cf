"""The few questions a loop asks about data parallelism.

With no process group (a single process) these are trivial; with torch.distributed
initialized, each rank takes its share of every global batch and counts are summed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def shard(global_batch: list[int]) -> list[int]:
    """This rank's examples of a global batch (strided, so every rank gets a fair share)."""
    return global_batch[rank() :: world_size()]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value

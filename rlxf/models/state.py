"""A model's trainable weights as a plain name -> tensor mapping: what checkpoints save and what
rollout workers are sent."""

from __future__ import annotations

import torch
from torch import nn

from rlxf.parallel.distributed import laid_out_like


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies on the CPU of the parameters that train (a gathered, sharded model frees the
    originals' memory once it reshards)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``state`` (whole tensors) into ``model``'s parameters, as shards where the model is sharded."""
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    unknown = [name for name in state if name not in params]
    if missing or unknown:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:3]}, unknown {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(laid_out_like(params[name], tensor))

"""The trained model across ranks: DDP (every rank holds the whole model) or FSDP2's
``fully_shard`` (each rank holds a shard of every weight, gradient and optimizer state; weights are
gathered layer by layer as the forward pass needs them: Zhao et al., "PyTorch FSDP: Experiences on
Scaling Fully Sharded Data Parallel", VLDB 2023, after Rajbhandari et al.'s ZeRO, SC 2020).
Gradients are summed over ranks, since rlxf's losses are already divided by global-batch counts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from rlxf.models.loading import is_empty
from rlxf.parallel.distributed import default_device, gathered, is_main, world_size


class _TrainingForward(nn.Module):
    """Runs ``compute(model, ...)`` as its forward, so DDP sees every training forward pass
    whichever of the model's submodules ``compute`` calls (rlxf's log-prob functions call the
    backbone and the output head separately)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, compute: Callable[..., Any], *args, **kwargs) -> Any:
        return compute(self.model, *args, **kwargs)


def _sum_gradients(_state, bucket):
    """rlxf's losses are already divided by global-batch counts, so rank gradients add;
    DDP's default hook would average them."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


STRATEGIES = ("ddp", "fsdp")


def start_device(strategy: str) -> str | None:
    """Where this rank builds the models it will train: on its device as usual (None), but for the
    ranks other than 0 of a sharded run, which build shapes only ("meta") and are sent their
    shards of rank 0's weights when the run shards the model. So only rank 0 reads the weights,
    and start-up holds one whole copy of the model, not one per rank. (Rank 0's whole copy must
    fit its device, as it must anyway to compute reference log-probs and to generate.)"""
    return "meta" if strategy == "fsdp" and world_size() > 1 and not is_main() else None


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: the classes transformers lists in a model's
    ``_no_split_modules`` (its decoder layers)."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return [m for m in model.modules() if type(m).__name__ in names]


def _fully_shard(wrapper: nn.Module) -> list[nn.Module]:
    """FSDP2 over ``wrapper.model``: one unit per decoder layer, the rest (embeddings, final norm,
    head) with the wrapper as root, holding rank 0's weights on every rank. Gradients are summed,
    not averaged, over ranks (see ``_sum_gradients``); gloo has no pre-multiplied sum, so a plain
    sum is forced."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    whole = wrapper.model.state_dict() if is_main() else {}  # rank 0's weights, to send once sharded
    mesh = init_device_mesh(default_device().type, (world_size(),))
    for unit in _shard_units(wrapper.model):
        fully_shard(unit, mesh=mesh)
    fully_shard(wrapper, mesh=mesh)
    if is_empty(wrapper):
        wrapper.to_empty(device=default_device())  # memory for this rank's shards only
    _load_from_rank0(wrapper.model, whole)
    units = [m for m in wrapper.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    wrapper(lambda model: None)  # FSDP initializes from the root's first call; later calls may start elsewhere
    wrapper.reshard()  # the root stays gathered after a forward: its sharded parameters are the ones to optimize
    return units


class TrainingForward:
    """``forward(compute, *args)`` = ``compute(model, *args)``; across ranks it runs inside
    ``DistributedDataParallel`` (which first copies rank 0's weights to every rank) or FSDP2
    (``strategy="fsdp"``: sharded, then given rank 0's weights, so the other ranks' models may be
    empty, built on the meta device), and the backward of a ``sync=True`` call sums the
    accumulated gradients over ranks. Earlier micro-batches of an update pass ``sync=False``:
    summing after each of them would count the gradients already summed again."""

    def __init__(self, model: nn.Module, strategy: str = "ddp"):
        if strategy not in STRATEGIES:
            raise ValueError(f"distributed.strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.model, self.parallel, self.sharded_units = model, None, []
        if world_size() > 1 and strategy == "fsdp":
            self._skeleton = _meta_copy(model)  # becomes the whole trained model in whole_model()
            self.parallel = _TrainingForward(model)
            self.sharded_units = _fully_shard(self.parallel)
        elif world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            device_ids = [device.index] if device.type == "cuda" else None
            self.parallel = DistributedDataParallel(_TrainingForward(model), device_ids=device_ids)
            self.parallel.register_comm_hook(None, _sum_gradients)

    def __call__(self, compute: Callable[..., Any], *args, sync: bool = True, **kwargs) -> Any:
        if self.parallel is None:
            return compute(self.model, *args, **kwargs)
        if self.sharded_units:
            self.parallel.set_requires_gradient_sync(sync)
            return self.parallel(compute, *args, **kwargs)
        if sync:
            return self.parallel(compute, *args, **kwargs)
        with self.parallel.no_sync():
            return self.parallel(compute, *args, **kwargs)

    @contextmanager
    def full_weights(self):
        """Inside, every weight of a sharded model is whole on every rank (generation, evaluation,
        saving call the model outside the training forward); a no-op unless sharded. Every rank
        must enter it together: gathering the weights is a collective."""
        layers = self._unshard()
        try:
            yield
        finally:
            for unit in self.sharded_units:
                unit.reshard()
            for unit in layers:
                unit.set_reshard_after_forward(True, recurse=False)

    def _unshard(self) -> list[nn.Module]:
        """Gathers a sharded model's weights until resharded; returns the units told not to
        reshard after their forward meanwhile."""
        layers = [unit for unit in self.sharded_units if unit is not self.parallel]  # the root is not called here
        for unit in layers:
            unit.set_reshard_after_forward(False, recurse=False)  # stay whole through every call
        for unit in self.sharded_units:
            unit.unshard()
        return layers

    def whole_model(self) -> nn.Module:
        """The trained model unsharded: a plain module with every weight whole (for saving and
        later use), on every rank, which must all call it; the model itself when not sharded."""
        if not self.sharded_units:
            return self.model
        state = gathered(self.model.state_dict())
        self._skeleton.load_state_dict(state, assign=True)
        for name, buffer in self.model.named_buffers():  # also those not saved, as received from rank 0
            owner, _, leaf = name.rpartition(".")
            setattr(self._skeleton.get_submodule(owner), leaf, buffer)
        if hasattr(self._skeleton, "tie_weights"):  # assigning tied weights one by one unties them
            self._skeleton.tie_weights()
        return self._skeleton


def _load_from_rank0(model: nn.Module, whole: dict[str, torch.Tensor]) -> None:
    """Every rank's shards of rank 0's whole weights ``whole`` (empty on the other ranks), sent
    one weight at a time, so no rank holds more than its shards and one whole weight (torch's
    ``broadcast_from_rank0`` option keeps every whole weight until the end). Buffers are sent too:
    some, like rotary frequencies, are in no state dict."""
    from torch.distributed.tensor import distribute_tensor

    with torch.no_grad():
        for name, sharded in model.named_parameters():
            source = (
                whole[name] if is_main() else torch.empty(sharded.shape, dtype=sharded.dtype, device=sharded.device)
            )
            dist.broadcast(source, src=0)
            own = distribute_tensor(source, sharded.device_mesh, sharded.placements, src_data_rank=None)
            sharded.to_local().copy_(own.to_local())
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are shape-only (meta) placeholders: no memory, no
    sharding hooks (``whole_model`` fills it)."""
    import copy

    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)

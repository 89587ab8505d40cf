"""Decoding on a CPU: the shapes a decode step has, made cheap.

A decode step multiplies a few rows by every weight matrix and appends one position to the
KV cache. Both are slow in their default form on the x86 CPUs measured here
(``python bench/cpu_decode_matmuls.py``, ``python bench/hf_generation.py``); each helper
below changes how the same products are computed (to float rounding), never what they are.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn
from transformers import DynamicCache, DynamicLayer


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer that writes each step's keys and values into room reserved ahead, where
    the default layer concatenates, copying the whole cache at every decode step and layer."""

    def __init__(self, room: int):
        super().__init__()
        self.room, self._keys, self._values = room, None, None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        new = old + key_states.shape[-2]
        if not self._backs_cache(key_states, new):  # first step, after a batch selection, or out of room
            self._reserve(key_states, value_states, old, new + self.room)
        self._keys[..., old:new, :].copy_(key_states)
        self._values[..., old:new, :].copy_(value_states)
        self.keys, self.values = self._keys[..., :new, :], self._values[..., :new, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Rows that go on keep their reserved room (one copy of their rows, no re-reservation)."""
        length = self.get_seq_length()
        if not length or self._keys is None or self.keys.data_ptr() != self._keys.data_ptr():
            return super().batch_select_indices(indices)
        self._keys, self._values = self._keys[indices], self._values[indices]
        self.keys, self.values = self._keys[..., :length, :], self._values[..., :length, :]

    def _backs_cache(self, key_states: torch.Tensor, new: int) -> bool:
        buffer = self._keys
        return (
            buffer is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == buffer.data_ptr()
            and buffer.shape[:2] == key_states.shape[:2]
            and new <= buffer.shape[-2]
        )

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, old: int, size: int) -> None:
        self._keys = key_states.new_empty(*key_states.shape[:2], size, key_states.shape[-1])
        self._values = value_states.new_empty(*value_states.shape[:2], size, value_states.shape[-1])
        if old:
            self._keys[..., :old, :].copy_(self.keys)
            self._values[..., :old, :].copy_(self.values)


def growing_cache(config, room: int) -> DynamicCache:
    """A DynamicCache whose full-attention layers reserve ``room`` more positions at a time."""
    cache = DynamicCache(config=config)
    cache.layers = [_GrowingLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


SKINNY_ROWS = 64
"""Up to this many input rows, a CPU linear layer uses the decode-shaped product."""


def _pack(weight: torch.Tensor, rows: int) -> torch.Tensor | None:
    """The weight in oneDNN's blocked layout for products with about ``rows`` rows; None where
    this torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    except (RuntimeError, AttributeError):
        return None


def _decode_linear(module: nn.Linear, packed: torch.Tensor | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if x.device.type != "cpu" or len(rows) > SKINNY_ROWS:
            return nn.functional.linear(x, module.weight, module.bias)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")
        out = torch.mm(module.weight, rows.t())
        if module.bias is not None:
            out += module.bias[:, None]
        out = out.t().contiguous()
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward


def _room_to_lay_out(linears: list[nn.Linear]) -> bool:
    """Whether a copy of these weights fits in half the memory the system has free now."""
    needed = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    return needed <= free // 2


@contextmanager
def decode_linears(model: nn.Module, rows: int = 16, *, lay_out: bool = True):
    """Decode-shaped matmuls while generating about ``rows`` rows at a time.

    At a few rows the BLAS call behind ``F.linear`` (x·Wᵀ) re-lays out the whole weight at every
    call, which makes a decode step cost far more than its arithmetic. With ``lay_out`` the
    weights are laid out once per generation instead, in oneDNN's blocked format (a copy of each
    plain ``nn.Linear`` weight, freed on exit: about 1.5x faster over SmolLM2-135M's layers at 16
    rows and 2.3x on its output head, for about 0.12 s of laying out the layers,
    ``python bench/cpu_decode_matmuls.py``). Without it, without oneDNN, or when the copy would
    not fit in half the free memory: W·xᵀ, the same product in the orientation that is fast at
    few rows. LoRA-wrapped layers run as they are; the model's own weights are untouched.

    Measured and left out: stacking the projections of one input (q, k, v; gate, up) into one
    matrix (no faster across the whole model); returning W·xᵀ's transposed view instead of a
    contiguous copy (slows the elementwise operations that follow).
    """
    linears = [m for m in model.modules() if type(m) is nn.Linear and "forward" not in vars(m)]
    on_cpu = next(model.parameters()).device.type == "cpu"
    lay_out = lay_out and on_cpu and _room_to_lay_out(linears)
    for module in linears:
        module.forward = _decode_linear(module, _pack(module.weight, rows) if lay_out else None)
    try:
        yield
    finally:
        for module in linears:
            del module.forward

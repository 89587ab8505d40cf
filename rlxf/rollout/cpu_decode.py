"""Decoding on a CPU: the shapes a decode step has, made cheap.

A decode step multiplies a few rows by every weight matrix and appends one position to the
KV cache. Both are slow in their default form on the x86 CPUs measured here
(``python bench/cpu_decode_matmuls.py``, ``python bench/hf_generation.py``); each helper
below changes how the same numbers are computed, never what they are.
"""

from __future__ import annotations

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
"""Up to this many input rows, a CPU linear layer computes W·xᵀ instead of x·Wᵀ."""


def _decode_linear(module: nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if x.device.type != "cpu" or len(rows) > SKINNY_ROWS:
            return nn.functional.linear(x, module.weight, module.bias)
        out = torch.mm(module.weight, rows.t())
        if module.bias is not None:
            out += module.bias[:, None]
        out = out.t().contiguous()
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward


@contextmanager
def decode_linears(model: nn.Module):
    """Decode-shaped matmuls while generating.

    At a few rows the BLAS call behind ``F.linear`` (x·Wᵀ) is slow, most of all for the output
    head's wide matrix; W·xᵀ is the same product, faster. Plain ``nn.Linear`` layers only
    (LoRA-wrapped ones run as they are); same weights, no copy; restored on exit.

    Measured and left out: stacking the projections of one input (q, k, v; gate, up) into one
    matrix is faster on one layer's weights, which stay in cache, but not across the whole
    model, whose weights stream from memory at every step; returning W·xᵀ's transposed view
    instead of a contiguous copy slows the elementwise operations that follow.
    """
    linears = [m for m in model.modules() if type(m) is nn.Linear and "forward" not in vars(m)]
    for module in linears:
        module.forward = _decode_linear(module)
    try:
        yield
    finally:
        for module in linears:
            del module.forward

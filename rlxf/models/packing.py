"""Attention for packed rows: several prompts, each with several completions, no padding.

Registered as the transformers attention implementation ``rlxf_packed``. A row holds
segments ``P C1 C2 ...`` (see :class:`rlxf.data.batching.Segment`): ``P C1`` is one
causal sequence, and every later completion attends to ``P`` and causally to itself,
so a prompt shared by chosen and rejected is computed once. Linear layers see only
real tokens. Without a layout (generation, padded batches) it is plain SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_ATTENTION = "rlxf_packed"


def _segment_attention(query: Tensor, key: Tensor, value: Tensor, segment, scale: float | None) -> list[Tensor]:
    start, prompt = segment.start, segment.prompt_length
    first = segment.completion_lengths[0] if segment.completion_lengths else 0
    end = start + prompt + first
    outputs = [F.scaled_dot_product_attention(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                              is_causal=True, scale=scale)]
    for length in segment.completion_lengths[1:]:
        keys = torch.cat([key[:, :, start:start + prompt], key[:, :, end:end + length]], dim=2)
        values = torch.cat([value[:, :, start:start + prompt], value[:, :, end:end + length]], dim=2)
        mask = torch.ones(length, prompt + length, dtype=torch.bool, device=query.device)
        mask[:, prompt:] = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
        outputs.append(F.scaled_dot_product_attention(query[:, :, end:end + length], keys, values,
                                                      attn_mask=mask, scale=scale))
        end += length
    return outputs


def packed_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segments = kwargs.get("rlxf_segments")
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise ValueError("packed attention supports plain causal attention only (no sliding window or soft-capping)")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    outputs = [piece for segment in segments for piece in _segment_attention(query, key, value, segment, scaling)]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Make ``rlxf_packed`` a valid ``attn_implementation``; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION


def use_packed_attention(model: nn.Module) -> None:
    """Switch a loaded decoder to packed attention (needed for packed batches)."""
    model.set_attn_implementation(register_packed_attention())


def uses_packed_attention(model: nn.Module) -> bool:
    return getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION

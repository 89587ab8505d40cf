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


def _segment_sizes(segments) -> list[int]:
    """Row split points: each segment as [P + C1, C2, C3, ...]."""
    sizes = []
    for segment in segments:
        lengths = segment.completion_lengths or (0,)
        sizes.append(segment.prompt_length + lengths[0])
        sizes.extend(lengths[1:])
    return sizes


def _attend(query: Tensor, key: Tensor, value: Tensor, segments, scale: float | None, gqa: bool) -> list[Tensor]:
    # split (not slicing) keeps the backward pass to one concatenation instead of a zero-filled
    # gradient per slice
    sizes = _segment_sizes(segments)
    queries, keys, values = (t.split(sizes, dim=2) for t in (query, key, value))
    outputs, piece = [], 0
    for segment in segments:
        prompt = segment.prompt_length
        first_k, first_v = keys[piece], values[piece]
        outputs.append(
            F.scaled_dot_product_attention(
                queries[piece], first_k, first_v, is_causal=True, scale=scale, enable_gqa=gqa
            )
        )
        piece += 1
        for length in segment.completion_lengths[1:]:
            k = torch.cat([first_k[:, :, :prompt], keys[piece]], dim=2)
            v = torch.cat([first_v[:, :, :prompt], values[piece]], dim=2)
            mask = torch.ones(length, prompt + length, dtype=torch.bool, device=query.device)
            mask[:, prompt:].tril_()
            outputs.append(
                F.scaled_dot_product_attention(queries[piece], k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
            )
            piece += 1
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
    outputs = _attend(query, key, value, segments, scaling, gqa=query.shape[1] != key.shape[1])
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _packed_mask(*args, **kwargs):
    """No mask for packed rows (the layout says who attends to whom); SDPA's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register_packed_attention() -> str:
    """Make ``rlxf_packed`` a valid ``attn_implementation``; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)
    return PACKED_ATTENTION


def use_packed_attention(model: nn.Module) -> None:
    """Switch a loaded decoder to packed attention (needed for packed batches)."""
    model.set_attn_implementation(register_packed_attention())


def uses_packed_attention(model: nn.Module) -> bool:
    return getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION

"""Reductions from per-example losses to the scalar that is back-propagated.

A loss is always divided by the size of the *global* batch (all micro-batches of
one optimizer step on all ranks), so that gradient accumulation and data
parallelism give the same gradient as one big batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sequence_mean(per_example: Tensor, global_count: int | float | Tensor) -> Tensor:
    """Sum of ``per_example`` divided by the number of examples in the global batch."""
    return per_example.sum() / global_count


def token_mean(per_sequence_token_sums: Tensor, global_token_count: int | float | Tensor) -> Tensor:
    """Sum over sequences of per-token sums, divided by the token count of the global batch."""
    return per_sequence_token_sums.sum() / global_token_count


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str = "token_mean",
    *,
    global_tokens: int | float | Tensor | None = None,
    global_sequences: int | None = None,
    max_tokens: int | None = None,
) -> Tensor:
    """Per-token losses (B, T) -> the scalar to back-propagate, for this rank's share.

    ``token_mean``: Σ loss / tokens of the global batch (DAPO's token-level loss, Yu et al. 2025).
    ``sequence_mean``: mean over sequences of each sequence's token mean (original GRPO).
    ``constant``: Σ loss / (sequences × max_tokens), Dr. GRPO's length-unbiased form
    (Liu et al. 2025). Global counts default to this batch's own.
    """
    mask = mask.to(per_token.dtype)
    sequences = global_sequences or per_token.shape[0]
    if mode == "token_mean":
        return (per_token * mask).sum() / (global_tokens if global_tokens is not None else mask.sum().clamp(min=1))
    if mode == "sequence_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / sequences
    if mode == "constant":
        if max_tokens is None:
            raise ValueError("the constant normalizer needs max_tokens (e.g. the generation limit)")
        return (per_token * mask).sum() / (sequences * max_tokens)
    raise ValueError(f"unknown aggregation {mode!r}; use token_mean, sequence_mean or constant")


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``values`` over the last dimension where ``mask`` is true.

    values: (B, T); mask: (B, T) of 0/1 -> (B,)
    """
    return (values * mask).sum(dim=-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-row mean of ``values`` where ``mask`` is true; rows with no true entry give 0."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


def mean_metrics(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Average each per-example metric tensor into a plain float for logging."""
    return {name: float(torch.as_tensor(value, dtype=torch.float32).mean()) for name, value in metrics.items()}

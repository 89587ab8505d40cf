"""Reductions from per-example losses to the scalar that is back-propagated.

A loss is always divided by the size of the *global* batch (all micro-batches of
one optimizer step on all ranks), so that gradient accumulation and data
parallelism give the same gradient as one big batch.
"""

from __future__ import annotations

from torch import Tensor


def sequence_mean(per_example: Tensor, global_count: int | float | Tensor) -> Tensor:
    """Sum of ``per_example`` divided by the number of examples in the global batch."""
    return per_example.sum() / global_count


def token_mean(per_sequence_token_sums: Tensor, global_token_count: int | float | Tensor) -> Tensor:
    """Sum over sequences of per-token sums, divided by the token count of the global batch."""
    return per_sequence_token_sums.sum() / global_token_count


def _token_mean(per_token: Tensor, mask: Tensor, *, tokens, sequences, max_tokens) -> Tensor:
    return (per_token * mask).sum() / tokens


def _sequence_mean(per_token: Tensor, mask: Tensor, *, tokens, sequences, max_tokens) -> Tensor:
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / sequences


def _constant(per_token: Tensor, mask: Tensor, *, tokens, sequences, max_tokens) -> Tensor:
    if max_tokens is None:
        raise ValueError("the constant normalizer needs max_tokens (e.g. the generation limit)")
    return (per_token * mask).sum() / (sequences * max_tokens)


def _sequence_sum(per_token: Tensor, mask: Tensor, *, tokens, sequences, max_tokens) -> Tensor:
    return (per_token * mask).sum() / sequences


AGGREGATIONS = {
    "token_mean": _token_mean,
    "sequence_mean": _sequence_mean,
    "constant": _constant,
    "sequence_sum": _sequence_sum,
}
"""How per-token losses become one number (see :func:`aggregate`)."""


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
    ``sequence_mean``: mean over sequences of each sequence's token mean (GRPO, Shao et al. 2024, Eq. 3).
    ``constant``: Σ loss / (sequences × max_tokens), Dr. GRPO's length-unbiased form
    (Liu et al. 2025). ``sequence_sum``: mean over sequences of each sequence's token sum, for a
    per-sequence loss spread over its tokens (SPPO). Global counts default to this batch's own.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; use one of {sorted(AGGREGATIONS)}")
    mask = mask.to(per_token.dtype)
    tokens = global_tokens if global_tokens is not None else mask.sum().clamp(min=1)
    sequences = global_sequences or per_token.shape[0]
    return AGGREGATIONS[mode](per_token, mask, tokens=tokens, sequences=sequences, max_tokens=max_tokens)

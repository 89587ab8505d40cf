"""Deterministic train/eval splits that keep related rows together."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def in_eval_split(group: str, eval_fraction: float, seed: int = 0) -> bool:
    """Whether a group lands in the eval split; depends only on the group text and seed,
    so every recipe (and every rank) that reads the same data agrees on the split."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split_by_group(
    records: Sequence[T], eval_fraction: float, *, key: Callable[[T], str] = lambda r: r.group_key, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Split so that records sharing ``key`` (default: the first user turn) never straddle the split."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    train, held = [], []
    for record in records:
        (held if in_eval_split(key(record), eval_fraction, seed) else train).append(record)
    return train, held

"""Which examples make up each optimizer step: a pure function of (seed, epoch, step).

Because the order is recomputed rather than stored, resuming at step s needs only s.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full global batches per epoch (a final partial batch is left for later epochs)."""
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples cannot fill one batch of {batch_size}")
    return num_examples // batch_size


def total_steps(num_examples: int, batch_size: int, *, epochs: float, max_steps: int) -> int:
    return max_steps if max_steps > 0 else max(1, math.ceil(epochs * steps_per_epoch(num_examples, batch_size)))


def epoch_batches(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    lengths: Sequence[int] | None = None,
    shuffle: bool = True,
) -> list[list[int]]:
    """The global batches of one epoch.

    With ``lengths``, examples of similar length are batched together (shuffled
    mega-batches of 32 batches, sorted by length inside), which cuts padding.
    Without ``shuffle``, batches follow the data order.
    """
    if not shuffle:
        count = steps_per_epoch(num_examples, batch_size)
        return [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(count)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    if lengths is not None:
        mega = batch_size * 32
        order = np.concatenate(
            [
                chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, math.ceil(num_examples / mega)))
            ]
        )
    count = steps_per_epoch(num_examples, batch_size)
    batches = [order[i * batch_size : (i + 1) * batch_size].tolist() for i in range(count)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(count)]
    return batches


def batch_for_step(
    step: int,
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    lengths: Sequence[int] | None = None,
    shuffle: bool = True,
) -> tuple[int, int, list[int]]:
    """(epoch, index in epoch, example indices) of the 0-based optimizer step."""
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, index = divmod(step, per_epoch)
    batches = epoch_batches(num_examples, batch_size, seed=seed, epoch=epoch, lengths=lengths, shuffle=shuffle)
    return epoch, index, batches[index]


def micro_batches(indices: list[int], micro_batch_size: int) -> list[list[int]]:
    return [indices[i : i + micro_batch_size] for i in range(0, len(indices), micro_batch_size)]


def examples_used(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    epochs: float,
    max_steps: int,
    lengths: Sequence[int] | None = None,
    shuffle: bool = True,
) -> list[int]:
    """The examples a run's steps read, in index order: all of them unless max_steps ends the
    run within its first epoch (then precomputing for the rest would be wasted)."""
    steps = total_steps(num_examples, batch_size, epochs=epochs, max_steps=max_steps)
    if steps >= steps_per_epoch(num_examples, batch_size):
        return list(range(num_examples))
    used: set[int] = set()
    for step in range(steps):
        used.update(batch_for_step(step, num_examples, batch_size, seed=seed, lengths=lengths, shuffle=shuffle)[2])
    return sorted(used)

"""Splitting a batch over rollout workers and putting their rollouts back together."""

import torch

from rlxf.parallel.actors import split
from rlxf.rollout import Rollout
from rlxf.rollout.ray_workers import concat_rollouts


def rollout(prompt_index, lengths, seconds):
    width = max(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    completions = [[7] * n for n in lengths]
    return Rollout(
        [[1] for _ in lengths],
        completions,
        -mask,
        mask,
        ["x"] * len(lengths),
        ["eos"] * len(lengths),
        prompt_index,
        {"generate_seconds": seconds},
    )


def test_shares_are_contiguous_and_as_even_as_they_go():
    assert split(5, 2) == [[0, 1, 2], [3, 4]]
    assert split(4, 2) == [[0, 1], [2, 3]]
    assert split(1, 3) == [[0], [], []]


def test_rollouts_of_consecutive_shares_concatenate_in_order():
    # worker 0: prompts 0, 1 with two samples each; worker 1: prompt 2 (its own index 0)
    merged = concat_rollouts([rollout([0, 0, 1, 1], [2, 1, 3, 1], 2.0), rollout([0, 0], [4, 2], 3.0)])
    assert merged.prompt_index == [0, 0, 1, 1, 2, 2]
    assert merged.mask.shape == (6, 4) and merged.mask.sum(1).tolist() == [2, 1, 3, 1, 4, 2]
    assert torch.equal(merged.logprobs, -merged.mask)
    # workers run side by side: the batch took as long as the slowest; 13 tokens / 3 s
    assert merged.timings["generate_seconds"] == 3.0
    assert merged.timings["generate_tokens_per_second"] == 13 / 3

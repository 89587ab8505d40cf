"""HERON's hierarchical comparison against preferences worked out by hand."""

import pytest
import torch

from rlxf.rewards.hierarchy import hierarchical_preferences
from rlxf.rewards.registry import build_reward_source


def test_the_most_important_factor_decides_unless_within_its_margin():
    # factor 1 = 1, 1, 0; factor 2 = 0, 2, 5. Pair (0, 1) ties on factor 1, so factor 2 decides for 1;
    # pairs (0, 2) and (1, 2) are decided by factor 1 (1 > 0)
    factors = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    assert hierarchical_preferences(factors, [0, 0]).tolist() == [[0.5, 0.0, 1.0], [1.0, 0.5, 1.0], [0.0, 0.0, 0.5]]
    # margin 2 × the sample deviation of factor 1 (√(1/3) = 0.577): 1 - 0 < 1.155, so factor 2 decides
    # every pair: 0 < 2 < 5
    assert hierarchical_preferences(factors, [2.0, 0]).tolist() == [[0.5, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 1.0, 0.5]]
    # nothing decides a pair equal on every factor: ½
    assert hierarchical_preferences(torch.tensor([[1.0, 1.0]]), [0]).tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_heron_rewards_each_sample_by_its_wins_within_its_prompt():
    source = build_reward_source(
        "heron", factors=[{"kind": "format", "pattern": "a"}, {"kind": "length", "free_chars": 3}]
    )
    # prompt 0: "a" (has a, short), "aaaaaaa" (has a, long: length penalty), "b" (no a)
    # prompt 1: one sample alone: ½
    completions = ["a", "aaaaaaa", "b", "zz"]
    batch = source.score([[{"role": "user", "content": "q"}]] * 4, completions, prompt_index=[0, 0, 0, 1])
    # "a" beats "aaaaaaa" on length and "b" on format: 1; "aaaaaaa" beats only "b": ½; "b": 0
    assert batch.rewards.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.5])
    assert set(batch.by_source) == {"heron", "heron/format", "heron/length"}
    assert batch.flags["reward/heron/alone"] == 0.5
    with pytest.raises(ValueError, match="one margin \\(a finite number >= 0\\) per factor"):
        build_reward_source("heron", factors=[{"kind": "math"}, {"kind": "length"}], margins=[1.0])
    with pytest.raises(ValueError, match="at least two sources"):
        build_reward_source("heron", factors=[{"kind": "math"}])


def test_a_difference_exactly_at_the_margin_does_not_decide_and_the_spread_is_the_batchs():
    # factor 1 = −1, 0, 1 has sample deviation exactly 1; factor 2 = 0, 5, 0
    factors = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 5.0, 0.0]])
    at_margin = hierarchical_preferences(factors, [1.0, 0.0])  # neighbours differ by 1, not more: factor 2 decides
    assert at_margin[1, 2] == 1.0 and at_margin[1, 0] == 1.0 and at_margin[2, 0] == 1.0
    below = hierarchical_preferences(factors, [0.99, 0.0])  # now factor 1 decides every pair
    assert below[1, 2] == 0.0 and below[1, 0] == 1.0
    # the spread is the batch's: samples 1 and 2 alone have deviation 0.707, so factor 1 now decides for 2
    assert hierarchical_preferences(factors[:, 1:], [1.0, 0.0])[0, 1] == 0.0

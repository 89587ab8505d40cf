import math

import pytest

from rlxf.eval.stats import binomial_two_sided_p, mean_interval, proportion, wilson
from rlxf.train.batches import batch_for_step, epoch_batches, micro_batches, steps_per_epoch, total_steps


def test_batches_are_a_pure_function_of_seed_epoch_and_step():
    first = epoch_batches(10, 3, seed=1, epoch=0)
    assert first == epoch_batches(10, 3, seed=1, epoch=0)
    assert first != epoch_batches(10, 3, seed=1, epoch=1)
    assert len(first) == 3 and len({i for b in first for i in b}) == 9  # one example waits for a later epoch
    assert batch_for_step(4, 10, 3, seed=1) == (1, 1, epoch_batches(10, 3, seed=1, epoch=1)[1])
    assert steps_per_epoch(10, 3) == 3 and total_steps(10, 3, epochs=1.5, max_steps=0) == 5
    assert total_steps(10, 3, epochs=1, max_steps=7) == 7
    assert micro_batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError, match="cannot fill one batch"):
        steps_per_epoch(2, 3)


def test_length_grouping_keeps_every_example_and_reduces_spread():
    lengths = [i % 17 * 10 + 5 for i in range(200)]
    grouped = epoch_batches(200, 8, seed=0, epoch=0, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(200))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped)
    plain = epoch_batches(200, 8, seed=0, epoch=0)
    assert spread < 0.5 * sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)


def test_wilson_interval_by_hand():
    # 7/10, z=1.96: centre (0.7 + 0.19208)/1.38416 = 0.64449, half 1.96*sqrt(0.021+0.009604)/1.38416 = 0.24772
    low, high = wilson(7, 10, z=1.96)
    assert (low, high) == (pytest.approx(0.39677, abs=1e-4), pytest.approx(0.89221, abs=1e-4))


def test_exact_sign_test_and_estimates():
    # P(X >= 8 | n=10) = (45 + 10 + 1)/1024 = 0.0546875; two-sided doubles it
    assert binomial_two_sided_p(8, 10) == pytest.approx(0.109375)
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    estimate = proportion([1, 1, 0.5, 0])  # a tie counts half; the sign test uses 2 wins of 3 decided
    assert estimate.value == pytest.approx(0.625) and estimate.n == 4
    assert estimate.p_value_vs_half == pytest.approx(1.0)
    mean = mean_interval([1.0, 2.0, 3.0])  # sd 1, half-width 1.96/sqrt(3)
    assert (mean.value, mean.high - mean.value) == (2.0, pytest.approx(1.959964 / math.sqrt(3), abs=1e-6))

"""The engine's sampler: draws from softmax(scores / T), truncated to the top-p nucleus."""

import math

import torch

from rlxf.rollout.hf import _SampleByInverseCdf

DRAWS = 40_000


def frequencies(sampler, probs):
    scores = torch.tensor(probs).log().repeat(DRAWS, 1)
    torch.manual_seed(0)
    picks, logprobs = sampler.draw(scores)
    expected = (scores / sampler.temperature).log_softmax(-1).gather(1, picks[:, None]).squeeze(1)
    assert torch.allclose(logprobs, expected)  # the drawn token's log-prob under softmax(scores / T)
    return torch.bincount(picks, minlength=len(probs)).float() / DRAWS


def close(observed, expected):
    # 5 standard errors of a frequency from 40k draws: fails on a wrong distribution, not by chance
    return all(abs(o - e) <= 5 * math.sqrt(e * (1 - e) / DRAWS) + 1e-9 for o, e in zip(observed.tolist(), expected))


def test_plain_sampling_follows_the_softmax():
    assert close(frequencies(_SampleByInverseCdf(1.0, 1.0), [0.5, 0.3, 0.15, 0.05]), [0.5, 0.3, 0.15, 0.05])


def test_temperature_sharpens_the_distribution():
    # T = 0.5 squares the probabilities before renormalizing: 0.25, 0.09, 0.0225, 0.0025 over 0.365
    expected = [0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365]
    assert close(frequencies(_SampleByInverseCdf(0.5, 1.0), [0.5, 0.3, 0.15, 0.05]), expected)


def test_top_p_keeps_the_smallest_head_holding_p():
    # p = 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it -> {0.5, 0.3} renormalized to 0.625, 0.375
    observed = frequencies(_SampleByInverseCdf(1.0, 0.7), [0.15, 0.5, 0.05, 0.3])
    assert observed[0] == 0 and observed[2] == 0
    assert close(observed, [0.0, 0.625, 0.0, 0.375])

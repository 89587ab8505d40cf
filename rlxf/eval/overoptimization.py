"""Reward over-optimization: the proxy the policy is trained on keeps rising while a gold signal it
never sees falls (Gao et al., "Scaling Laws for Reward Model Overoptimization", ICML 2023).

- :func:`parting_step`: from a run's per-step proxy and gold rewards, the step where they part.
- :func:`best_of_n_curve`: gold and proxy reward of best-of-n sampling against its KL, Gao et al.'s
  first curve, with the unbiased estimator over every n-subset of N samples.
- :func:`distinct_n`: the diversity of a step's samples (Li et al., "A Diversity-Promoting
  Objective Function for Neural Conversation Models", NAACL 2016).
"""

from __future__ import annotations

import math
from statistics import NormalDist, fmean, pstdev
from typing import Sequence

import torch
from torch import Tensor


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of the texts' whitespace tokens (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The trailing mean of the last ``window`` values at each step (fewer at the start)."""
    return [fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def step_noise(values: Sequence[float]) -> float:
    """The step-to-step noise of a series with a trend: the spread of its first differences / √2."""
    differences = [b - a for a, b in zip(values, values[1:])]
    return pstdev(differences) / math.sqrt(2) if len(differences) > 1 else 0.0


FALSE_ALARM_RATE = 0.05
"""The watch's chance of warning at all, over a whole run, when the gold does not fall."""


def parting_margin(steps: int, window: int, alpha: float = FALSE_ALARM_RATE) -> float:
    """How many step-noises a window's mean must move by: z·√2/√window, the standard error of a
    difference of two ``window``-step means times a z that a one-sided test at ``alpha / steps²``
    needs — Bonferroni over the at most ``steps`` candidate peaks and the at most ``steps`` steps at
    which the watch looks, so that a run with a flat gold warns with probability at most ``alpha``."""
    z = NormalDist().inv_cdf(1 - alpha / max(steps, 2) ** 2)
    return z * math.sqrt(2) / math.sqrt(window)


def parting_step(proxy: Sequence[float], gold: Sequence[float], window: int = 5) -> int | None:
    """The index of the step where the gold signal peaked, if since then (at least ``window`` steps)
    the gold has fallen while the proxy held — it rose over the run and did not fall since the
    gold's peak — each judged against :func:`parting_margin` step-noises (noise from
    :func:`step_noise`); else None. Both series are smoothed by a trailing ``window``-step mean; the
    peak is sought from the first full window. (A proxy at its ceiling still counts as optimized.)"""
    if len(gold) < 2 * window:
        return None
    gold_smooth, proxy_smooth = moving_average(gold, window), moving_average(proxy, window)
    peak = max(range(window - 1, len(gold)), key=lambda i: gold_smooth[i])
    margin = parting_margin(len(gold), window)
    gold_noise, proxy_noise = margin * step_noise(gold), margin * step_noise(proxy)
    fell = gold_smooth[peak] - gold_smooth[-1] > gold_noise
    rose = proxy_smooth[-1] - proxy_smooth[window - 1] > proxy_noise
    held = proxy_smooth[-1] > proxy_smooth[peak] - proxy_noise
    return peak if fell and rose and held and len(gold) - 1 - peak >= window else None


def best_of_n_kl(n: int) -> float:
    """KL(π_best-of-n ‖ π) as Gao et al. 2023 plot it: log n − (n − 1)/n (Stiennon et al. 2020,
    App. G); an upper bound on the true KL, exact only when the proxy never ties (Beirami et al.,
    "Theoretical guarantees on the best-of-n alignment policy", 2024)."""
    return math.log(n) - (n - 1) / n


def best_of_n_curve(proxy: Tensor, gold: Tensor, ns: Sequence[int]) -> list[dict]:
    """For each n: the expected gold and proxy reward of the sample best by the proxy among n drawn
    without replacement from each prompt's N samples, averaged over prompts (with the standard error
    over prompts, and each prompt's value), and best-of-n's KL.

    proxy, gold: (P, N). The expectation is exact over all n-subsets: ranked by proxy (ascending,
    rank i = 1..N), the i-th sample is a subset's best with probability C(i−1, n−1) / C(N, n)
    (Gao et al. 2023, App. D's unbiased estimator)."""
    prompts, count = proxy.shape
    order = proxy.argsort(dim=1)
    proxy_sorted, gold_sorted = proxy.gather(1, order).double(), gold.gather(1, order).double()
    curve = []
    for n in ns:
        if not 1 <= n <= count:
            raise ValueError(f"best-of-n needs 1 <= n <= {count} samples per prompt, got n={n}")
        weights = torch.tensor([math.comb(i - 1, n - 1) / math.comb(count, n) for i in range(1, count + 1)])
        per_prompt = (gold_sorted * weights).sum(1)
        curve.append(
            {
                "n": n,
                "kl": best_of_n_kl(n),
                "gold": float(per_prompt.mean()),
                "gold_se": float(per_prompt.std() / math.sqrt(prompts)) if prompts > 1 else 0.0,
                "proxy": float((proxy_sorted * weights).sum(1).mean()),
                "gold_per_prompt": per_prompt.tolist(),
            }
        )
    return curve


def gold_fall(curve: list[dict]) -> dict:
    """From the gold's peak to the largest n: the fall of its mean, and the standard error of that
    fall over prompts (paired: the same prompts at both n)."""
    peak, last = max(curve, key=lambda p: p["gold"]), curve[-1]
    differences = [a - b for a, b in zip(peak["gold_per_prompt"], last["gold_per_prompt"])]
    spread = pstdev(differences) * math.sqrt(len(differences) / (len(differences) - 1)) if len(differences) > 1 else 0.0
    return {"peak_n": peak["n"], "fall": fmean(differences), "fall_se": spread / math.sqrt(len(differences))}

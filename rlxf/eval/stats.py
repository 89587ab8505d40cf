"""Intervals and tests for the proportions the reports show."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

Z95 = 1.959963984540054


@dataclass
class Estimate:
    """A proportion or mean with its 95% interval and sample size."""

    value: float
    low: float
    high: float
    n: int
    p_value_vs_half: float | None = None
    """Two-sided test against 0.5 (for accuracies and win rates)."""

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"

    @property
    def significant_vs_half(self) -> bool:
        return self.p_value_vs_half is not None and self.p_value_vs_half < 0.05


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (Wilson, 1927) for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided_p(successes: int, n: int) -> float:
    """Exact two-sided binomial test of p = 1/2 (sum of outcomes no likelier than the observed)."""
    if n == 0:
        return 1.0
    probabilities = [math.comb(n, k) / 2**n for k in range(n + 1)]
    observed = probabilities[successes]
    return min(1.0, sum(p for p in probabilities if p <= observed * (1 + 1e-9)))


def proportion(outcomes: Sequence[float]) -> Estimate:
    """A rate from outcomes in {0, 1}, or {0, 0.5, 1} when ties count half.

    The interval is Wilson's; the test against 1/2 is the exact sign test on the
    decided (non-tied) outcomes.
    """
    n = len(outcomes)
    total = float(sum(outcomes))
    low, high = wilson(total, n)
    wins = sum(1 for o in outcomes if o == 1)
    decided = sum(1 for o in outcomes if o in (0, 1))
    return Estimate(total / n if n else 0.0, low, high, n, binomial_two_sided_p(wins, decided))


def mean_interval(values: Sequence[float]) -> Estimate:
    """Mean with a normal-approximation 95% interval."""
    n = len(values)
    if n == 0:
        return Estimate(0.0, 0.0, 0.0, 0)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
    half = Z95 * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half, n)


def student_t_quantile(probability: float, degrees_of_freedom: int) -> float:
    """The ``probability`` quantile of Student's t with ``degrees_of_freedom``."""
    from scipy.stats import t  # scipy only where a t quantile is wanted

    return float(t.ppf(probability, degrees_of_freedom))


def student_t_upper_bound(values: Sequence[float], delta: float) -> dict:
    """One-sided (1 − δ) upper confidence bound on the mean: ``mean + t_{1−δ, n−1} · s / √n``, s the
    sample standard deviation (Student 1908; the safety test of Thomas et al., "Preventing undesirable
    behavior of intelligent machines", Science 2019, used by HC-RLHF)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an upper confidence bound needs at least 2 values, got {n}")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "delta": delta,
        "ucb": mean + student_t_quantile(1 - delta, n - 1) * std / math.sqrt(n),
    }


def cohens_kappa(first: list, second: list) -> float:
    """Cohen (1960): (p_o - p_e) / (1 - p_e), p_e from each rater's own label frequencies;
    nan when chance agreement is already total."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def majority(labels: list):
    """The most common label when it is strictly the most common, else None."""
    ranked = Counter(labels).most_common(2)
    return ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else None

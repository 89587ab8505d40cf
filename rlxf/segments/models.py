"""The partial-return and regret models of human preference between trajectory segments.

Knox et al., "Models of human preference for learning reward functions", 2022 (TMLR 2024, arXiv
2206.02231): a person prefers the segment with the larger

- partial return: P(σ_r ≻ σ_l) = σ(s · (Σ_t r(σ_r) − Σ_t r(σ_l))), or the smaller
- regret: regret(σ) = −Σ_t A*(s_t, a_t), which for deterministic moves and γ = 1 telescopes
  to V*(s_0) − [Σ_t r_t + V*(s_T)], so P(σ_r ≻ σ_l) = σ(s · (regret(σ_l) − regret(σ_r)))
  = σ(s · (ΔPR + ΔV*(s_T) − ΔV*(s_0))), Δ = right minus left.

Each is a one-parameter logistic model without bias over one feature of X = [ΔPR, ΔV*(s_0),
ΔV*(s_T)] (the delivery data of Hatgis-Kessell et al., "Influencing Humans to Conform to Preference
Models for RLHF", 2025, arXiv 2501.06416), fitted by maximum likelihood with soft labels (a tie is
½ for each side), as upstream fits it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def partial_return_feature(features: np.ndarray) -> np.ndarray:
    """ΔPR, the right segment's summed reward minus the left's: column 0 of X (N, 3)."""
    return features[:, 0]


def regret_feature(features: np.ndarray) -> np.ndarray:
    """regret(left) − regret(right) = ΔPR + ΔV*(s_T) − ΔV*(s_0) (Knox et al. 2022, the regret model)."""
    return features[:, 0] + features[:, 2] - features[:, 1]


PREFERENCE_MODELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "partial_return": partial_return_feature,
    "regret": regret_feature,
}
"""Each model's feature f(X); the model is P(right ≻ left) = σ(s · f(X))."""


def log_sigmoid(logits: np.ndarray) -> np.ndarray:
    """log σ(z) = −log(1 + e^{−z}), exact for large |z| (clipping σ would understate the loss)."""
    return -np.logaddexp(0.0, -logits)


def soft_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per pair −[y log σ(z) + (1 − y) log σ(−z)], z the logit of P(right ≻ left), y = P(right ≻ left)."""
    return -(labels * log_sigmoid(logits) + (1.0 - labels) * log_sigmoid(-logits))


def mean_cross_entropy(scale: float, feature: np.ndarray, labels: np.ndarray) -> float:
    """The model's negative mean log-likelihood at ``scale``."""
    return float(np.mean(soft_cross_entropy(scale * feature, labels)))


def fit_scale(feature: np.ndarray, labels: np.ndarray, *, max_scale: float = 1e4, tol: float = 1e-12) -> float:
    """The maximum-likelihood s of P(right ≻ left) = σ(s · feature), soft labels.

    The mean cross-entropy is convex in s, so its minimum is where the derivative
    g(s) = mean((σ(s f) − y) f) crosses zero: bracket that crossing by doubling |s| from 0, then
    take Newton steps (curvature mean(σ(1 − σ) f²)) that fall back to bisection when they leave
    the bracket. If the labels are separable the likelihood has no maximum; |s| then stops at
    ``max_scale`` (or where the slope underflows to 0).
    """
    feature, labels = np.asarray(feature, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    slope = _slope(0.0, feature, labels)
    if slope == 0.0:
        return 0.0
    sign = -np.sign(slope)  # the likelihood rises in this direction from s = 0

    def along(t: float) -> tuple[float, float]:  # derivative and curvature along sign · t, t >= 0
        return sign * _slope(sign * t, feature, labels), _curvature(sign * t, feature)

    low, high = 0.0, 1.0
    while along(high)[0] < 0:
        if high >= max_scale:
            return float(sign * max_scale)
        low, high = high, min(2 * high, max_scale)
    return float(sign * _newton_in_bracket(along, low, high, tol))


def _newton_in_bracket(
    derivative: Callable[[float], tuple[float, float]], low: float, high: float, tol: float
) -> float:
    """The root of an increasing ``derivative`` in [low, high] (negative at low, not at high)."""
    t = 0.5 * (low + high)
    for _ in range(200):
        value, curvature = derivative(t)
        if abs(value) <= tol:
            return t
        low, high = (t, high) if value < 0 else (low, t)
        if high - low <= tol * (1.0 + high):
            return t
        step = t - value / curvature if curvature > 0 else np.inf
        t = step if low < step < high else 0.5 * (low + high)
    return t


def _slope(scale: float, feature: np.ndarray, labels: np.ndarray) -> float:
    """d/ds of the mean cross-entropy: mean((σ(s f) − y) f), with σ(z) − y written as
    (1 − y) σ(z) − y σ(−z) so that it does not cancel to 0 far from s = 0."""
    z = scale * feature
    residual = (1.0 - labels) * np.exp(log_sigmoid(z)) - labels * np.exp(log_sigmoid(-z))
    return float(np.mean(residual * feature))


def _curvature(scale: float, feature: np.ndarray) -> float:
    """d²/ds² of the mean cross-entropy: mean(σ(s f) σ(−s f) f²) >= 0."""
    z = scale * feature
    return float(np.mean(np.exp(log_sigmoid(z) + log_sigmoid(-z)) * feature**2))

"""Held-out log-likelihood and accuracy of a preference model, as Knox et al. report them.

Knox et al., "Models of human preference for learning reward functions", 2022 (TMLR 2024, arXiv
2206.02231): 10-fold cross-validation; on each held-out pair the model's cross-entropy
−[y log P + (1 − y) log(1 − P)] with P = P(right ≻ left) and the soft label y (ties ½), and its
accuracy. Conventions here:

- folds: ``numpy.random.default_rng(seed).permutation(N)`` split into ``folds`` nearly equal parts
  (``numpy.array_split``); every pair is held out exactly once;
- the held-out cross-entropy is the mean over all N pairs of each pair's loss under the model fitted
  without its fold (folds differ in size by at most one, so this is the mean of the fold means to
  within that);
- accuracy counts only pairs with a strict preference (ties excluded); a pair whose logit is
  exactly 0 (e.g. equal partial returns, about a third of some conditions) gets half credit;
- "full" is the in-sample cross-entropy of the model fitted on all pairs (what upstream's
  likelihood analysis reports).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlxf.segments.models import fit_scale, soft_cross_entropy


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of each fold: a seeded permutation of range(n), split into ``folds``."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the {n} pairs, got {folds}")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of strict preferences whose side the logit picks; a zero logit scores ½, ties are left out."""
    strict = labels != 0.5
    if not strict.any():
        return float("nan")
    picked = np.where(logits == 0, 0.5, (logits > 0) == (labels == 1.0))
    return float(np.mean(picked[strict]))


def held_out_logits(
    labels: np.ndarray,
    folds: list[np.ndarray],
    fit_and_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Each pair's logit of P(right ≻ left) from a model fitted on the other folds.

    ``fit_and_predict(train, test)`` takes index arrays and returns the logits of the ``test`` pairs.
    """
    logits = np.full(len(labels), np.nan)
    everything = np.arange(len(labels))
    for test in folds:
        logits[test] = fit_and_predict(np.setdiff1d(everything, test), test)
    return logits


def logistic_results(feature: np.ndarray, labels: np.ndarray, folds: list[np.ndarray]) -> dict[str, float]:
    """In-sample and cross-validated cross-entropy, and held-out accuracy, of σ(s · feature)."""
    scale = fit_scale(feature, labels)
    logits = held_out_logits(
        labels, folds, lambda train, test: fit_scale(feature[train], labels[train]) * feature[test]
    )
    return {
        "scale": scale,
        "ce_full": float(np.mean(soft_cross_entropy(scale * feature, labels))),
        "ce_cv": float(np.mean(soft_cross_entropy(logits, labels))),
        "accuracy": accuracy(logits, labels),
    }


def held_out_results(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Cross-entropy and accuracy of held-out logits (for models without a closed-form fit, e.g. CPL)."""
    return {"ce_cv": float(np.mean(soft_cross_entropy(logits, labels))), "accuracy": accuracy(logits, labels)}

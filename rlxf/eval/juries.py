"""Several judges, several rubric aspects: how their ratings become one verdict, one preference
pair, and how far each verdict agrees with people.

Ratings are an array ``(judges, aspects, candidates)``; NaN where a judge's reply had no rating.

- **mean** — UltraFeedback's fine-grained score (Cui et al., "UltraFeedback: Boosting Language Models
  with High-quality Feedback", 2023): a candidate's mean rating over aspects and judges (average
  pooling of a panel, Verga et al., "Replacing Judges with Juries", 2024), over the (judge, aspect)
  cells that rated every candidate: a reply that failed to parse removes its cell for all of them.
- **majority** — each judge votes for the candidate its own mean over aspects ranks first (no vote
  when its top is tied or no aspect of it rated every candidate); the candidate with strictly the most votes wins (max
  voting of a panel, Verga et al. 2024).
- **aspect:<name>** — one aspect's mean over judges.

Binarization follows UltraFeedback's binarized sets: the best candidate is chosen and one candidate
rated strictly lower, drawn at random, is rejected; a prompt whose candidates all tie gives no pair.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

import numpy as np

from rlxf.eval.stats import cohens_kappa


def candidate_scores(ratings: np.ndarray, how: str, aspects: list[str]) -> np.ndarray:
    """One score per candidate (NaN where no judge rated them all) under ``how``: mean, majority (the
    candidate's share of the judges' votes) or aspect:<name>. Only the (judge, aspect) cells that rate
    every candidate count, so that candidates are always compared on the same ratings."""
    if how == "mean":
        return complete_mean(ratings.reshape(-1, ratings.shape[2]))
    if how.startswith("aspect:") and how.removeprefix("aspect:") in aspects:
        return complete_mean(ratings[:, aspects.index(how.removeprefix("aspect:"))])
    if how == "majority":
        votes = [judge_vote(complete_mean(per_judge)) for per_judge in ratings]
        cast = [v for v in votes if v is not None]
        counts = np.array([cast.count(c) for c in range(ratings.shape[2])], dtype=float)
        return counts / len(cast) if cast else np.full(ratings.shape[2], np.nan)
    raise ValueError(f"aggregate must be mean, majority or aspect:<one of {aspects}>, got {how!r}")


def complete_mean(cells: np.ndarray) -> np.ndarray:
    """The mean over the rows (rating cells) that rate every candidate; NaN when none does."""
    complete = cells[~np.isnan(cells).any(axis=1)]
    return complete.mean(axis=0) if len(complete) else np.full(cells.shape[1], np.nan)


def judge_vote(scores: np.ndarray) -> int | None:
    """The candidate a judge ranks first, or None when its top is tied or it rated nothing."""
    if np.isnan(scores).any():
        return None
    best = np.flatnonzero(scores == scores.max())
    return int(best[0]) if len(best) == 1 else None


def winner(scores: np.ndarray) -> int | str | None:
    """The best candidate's index, "tie" when several share the top, None when nothing was rated."""
    if np.isnan(scores).any():
        return None
    best = np.flatnonzero(scores == scores.max())
    return int(best[0]) if len(best) == 1 else "tie"


def binarize(scores: np.ndarray, rng: random.Random) -> tuple[int, int] | None:
    """(chosen, rejected): the best candidate and a random one rated strictly lower; None when the
    candidates all tie, a candidate is unrated, the top is shared, or there is one candidate."""
    best = winner(scores)
    if not isinstance(best, int):
        return None
    lower = [i for i, s in enumerate(scores) if s < scores[best]]
    return (best, rng.choice(lower)) if lower else None


def agreement(verdicts: list, people: list) -> dict:
    """How a source's verdicts (candidate index, "tie" or None) agree with people's (the same): on the
    items where both gave one, the share equal and Cohen's kappa; and the share of people's decided
    (non-tie) items the source decided the same way."""
    both = [(v, p) for v, p in zip(verdicts, people) if v is not None and p is not None]
    decided = [(v, p) for v, p in both if p != "tie"]
    kappa = cohens_kappa([v for v, _ in both], [p for _, p in both]) if both else math.nan
    return {
        "compared": len(both),
        "unanswered": sum(v is None for v in verdicts),
        "agreement": _share(sum(v == p for v, p in both), len(both)),
        "kappa": None if math.isnan(kappa) else kappa,
        "accuracy_on_decided": _share(sum(v == p for v, p in decided), len(decided)),
        "decided": len(decided),
    }


def panel_agreement(verdicts_by_judge: dict[str, list]) -> dict[str, float | None]:
    """Cohen's kappa between every two judges, on the items both answered."""
    kappas = {}
    for (a, first), (b, second) in combinations(verdicts_by_judge.items(), 2):
        both = [(x, y) for x, y in zip(first, second) if x is not None and y is not None]
        kappa = cohens_kappa([x for x, _ in both], [y for _, y in both]) if both else math.nan
        kappas[f"{a} | {b}"] = None if math.isnan(kappa) else kappa
    return kappas


def _share(count: int, total: int) -> float | None:
    return count / total if total else None

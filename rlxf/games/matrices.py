"""Preference matrices over K responses: P[i, j] = P(y_i ≻ y_j), P + Pᵀ = 1, diagonal 1/2.

- rock-paper-scissors: every response beats one and loses to another (no Condorcet winner);
- random intransitive: P = 1/2 + A with A antisymmetric, entries uniform in [-1/2, 1/2] (almost
  surely intransitive for K ≥ 3);
- transitive: P = σ(r_i - r_j) from scalar scores, the Bradley-Terry case, as the control in
  which a reward model loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Game:
    """A β-regularized preference game over K responses."""

    preferences: Tensor  # (K, K) P[i, j] = P(y_i ≻ y_j)
    reference: Tensor  # (K,) μ, every entry > 0
    beta: float  # KL weight of the regularized game

    def wins(self, log_policy: Tensor) -> Tensor:
        """(K,) P(y ≻ π) of each response against the policy (one preference query)."""
        return self.preferences @ log_policy.exp()


def rock_paper_scissors() -> Tensor:
    """Rock, paper, scissors: paper beats rock, scissors beat paper, rock beats scissors."""
    return torch.tensor([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]], dtype=torch.float64)


def random_intransitive(k: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    upper = (torch.rand(k, k, generator=generator, dtype=torch.float64) - 0.5).triu(1)
    return 0.5 + upper - upper.T


def transitive(k: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(k, generator=generator, dtype=torch.float64)
    return torch.sigmoid(scores[:, None] - scores[None, :])


def check_preference_matrix(preferences: Tensor) -> None:
    """A square matrix of probabilities with P + Pᵀ = 1, or a ValueError saying what fails."""
    if preferences.ndim != 2 or preferences.shape[0] != preferences.shape[1]:
        raise ValueError(f"a preference matrix is K x K, got shape {tuple(preferences.shape)}")
    if preferences.min() < 0 or preferences.max() > 1:
        raise ValueError("preference probabilities must lie in [0, 1]")
    if not torch.allclose(preferences + preferences.T, torch.ones_like(preferences), atol=1e-9):
        raise ValueError("a preference matrix needs P[i, j] + P[j, i] = 1 (the diagonal 1/2)")


GAMES = {
    "rock_paper_scissors": lambda k, seed: rock_paper_scissors(),
    "random_intransitive": random_intransitive,
    "transitive": transitive,
}
"""Game name -> builder(k, seed) (rock-paper-scissors ignores both: it is 3 x 3)."""

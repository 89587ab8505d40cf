"""What a Bradley-Terry reward model makes of a preference matrix, and the RLHF policy built on it.

Bradley & Terry (1952); as RLHF's reward model, Christiano et al. (2017) and Ouyang et al. (2022):
scores r with P(y ≻ y') ≈ σ(r_y - r_y'), fitted by maximum likelihood to pairs drawn from the
reference, and the KL-regularized policy π ∝ μ exp(r/β). Where P is transitive in this sense the
fit is exact; where it is intransitive no r fits, and the policy it yields is exploitable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlxf.games.matrices import Game


def bt_scores(game: Game) -> Tensor:
    """Maximum-likelihood BT scores (mean 0) for pairs weighted μ(y) μ(y'), labelled by P."""
    weights = torch.outer(game.reference, game.reference)
    scores = torch.zeros_like(game.reference, requires_grad=True)
    optimizer = torch.optim.LBFGS([scores], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def negative_log_likelihood():
        optimizer.zero_grad()
        difference = scores[:, None] - scores[None, :]
        loss = -(weights * game.preferences * F.logsigmoid(difference)).sum()
        loss.backward()
        return loss

    optimizer.step(negative_log_likelihood)
    return (scores - scores.mean()).detach()


def bt_fit_error(game: Game) -> float:
    """The largest |P(y ≻ y') - σ(r_y - r_y')| of the fitted scores: 0 for a transitive game."""
    scores = bt_scores(game)
    return float((game.preferences - torch.sigmoid(scores[:, None] - scores[None, :])).abs().max())


def rlhf_policy(game: Game) -> Tensor:
    """argmax_π E_π[r] - β KL(π‖μ) = softmax(log μ + r/β), r the fitted BT scores."""
    return torch.softmax(game.reference.log() + bt_scores(game) / game.beta, dim=0)

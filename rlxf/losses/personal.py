"""The loss of a personalized reward model with a user latent.

Poddar et al., "Personalizing Reinforcement Learning from Human Feedback with Variational Preference
Learning" (NeurIPS 2024), Eq. 3: the negative evidence lower bound of a user's preferences,
``−E_{z∼q(z|context)}[log σ(r(x, y_w, z) − r(x, y_l, z))] + β KL(q(z|context) ‖ N(0, I))``, one sample
of z per user (the reparameterization trick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row: ½ Σ (σ² + μ² − 1 − log σ²). mu, logvar: (U, D) -> (U,)."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(dim=-1)


def variational_preference(
    chosen: Tensor, rejected: Tensor, owner: Tensor, mu: Tensor, logvar: Tensor, *, beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per user: the mean Bradley–Terry loss of their target pairs plus β times their posterior's KL.

    chosen, rejected: (P,) rewards under the user's sampled z; owner: (P,) the user of each pair;
    mu, logvar: (U, D). Returns ((U,) loss per user, metrics)."""
    pair_loss = -F.logsigmoid(chosen - rejected)
    users = mu.shape[0]
    counts = torch.zeros(users, dtype=pair_loss.dtype).scatter_add(0, owner, torch.ones_like(pair_loss))
    per_user = torch.zeros(users, dtype=pair_loss.dtype).scatter_add(0, owner, pair_loss) / counts.clamp(min=1)
    kl = gaussian_kl(mu, logvar)
    metrics = {
        "accuracy": (chosen > rejected).float().mean().detach(),
        "kl": kl.mean().detach(),
        "preference_loss": pair_loss.mean().detach(),
    }
    return per_user + beta * kl, metrics

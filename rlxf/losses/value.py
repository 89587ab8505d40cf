"""Value-function (critic) losses."""

from __future__ import annotations

import torch
from torch import Tensor


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, *, clip: float = 0.2
) -> tuple[Tensor, dict]:
    """PPO's clipped value loss, per token.

    Schulman et al. (2017); as implemented in OpenAI baselines and used for RLHF by
    Ziegler et al. (2019): ``½ max((V - R)², (V_old + clip(V - V_old, -ε, ε) - R)²)``.
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    loss = 0.5 * torch.maximum(unclipped_error, clipped_error)
    return loss, {"value_clipped": (clipped_error > unclipped_error).float()}

"""The reference policy of KL-regularized online RL, in the trainer's process.

Interface shared with :class:`rlxf.models.ray_reference.RayReference`: ``token_logps(batch,
temperature)`` and ``refresh()``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rlxf.models.loading import load_causal_lm
from rlxf.models.logprobs import token_logps
from rlxf.models.lora import is_lora
from rlxf.models.packing import use_packed_attention


class Reference:
    """log π_ref of sampled tokens: the model ``name``, else a frozen copy of the initial policy,
    or for a LoRA policy its base weights (the adapters switched off)."""

    def __init__(self, policy: nn.Module, name: str, dtype: str, seed: int):
        self.policy = policy
        self.model = None
        if name:
            self.model = load_causal_lm(name, dtype=dtype, seed=seed).eval().requires_grad_(False)
            use_packed_attention(self.model)
        elif not is_lora(policy):
            self.model = copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def token_logps(self, batch, temperature: float) -> Tensor:
        if self.model is not None:
            return token_logps(self.model, batch, temperature=temperature).values
        with self.policy.disable_adapter():  # LoRA: the base weights are the reference
            return token_logps(self.policy, batch, temperature=temperature).values

    def refresh(self) -> None:
        """T1: the current policy becomes the reference."""
        if self.model is not None:
            self.model.load_state_dict(self.policy.state_dict())

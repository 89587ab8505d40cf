"""The reference policy of KL-regularized online RL in a Ray actor of its own, so its forward
passes (and its memory) leave the trainer.

Same interface as the in-trainer reference: ``token_logps(batch, temperature)`` and
``refresh(policy)``. A refresh sends the policy's weights to the actor; an actor that dies is
replaced, given the last refreshed weights, and the call is made again.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from rlxf.models.logprobs import token_logps
from rlxf.parallel.actors import ActorPool, PoolWorker


class ReferenceWorker(PoolWorker):
    """Holds the frozen reference model built by ``model_factory()``."""

    def __init__(self, model_factory: Callable[[], nn.Module], threads: int):
        super().__init__(threads)
        self.model = model_factory().eval().requires_grad_(False)

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    @torch.no_grad()
    def token_logps(self, batch, temperature: float) -> Tensor:
        return token_logps(self.model, batch, temperature=temperature).values


class RayReference(ActorPool):
    """``model_factory`` builds the reference as the trainer would (its initial policy, or
    ``reference.name``); ``refresh`` copies ``policy`` into it when ``refreshable`` (not for
    LoRA, whose reference is the base model)."""

    def __init__(
        self, policy: nn.Module, model_factory: Callable[[], nn.Module], *, cpus: int, gpus=0.0, refreshable: bool
    ):
        super().__init__(ReferenceWorker, (model_factory,), workers=1, cpus_per_worker=cpus, gpus_per_worker=gpus)
        self.policy, self.refreshable, self.state = policy, refreshable, None

    def token_logps(self, batch, temperature: float) -> Tensor:
        def resend(index: int):  # to a replacement, which starts from the initial weights
            if self.state is not None:
                self.workers[index].load_state.remote(self.state)
            return self.workers[index].token_logps.remote(batch, temperature)

        return self.gather({0: self.workers[0].token_logps.remote(batch, temperature)}, resend)[0]

    def refresh(self) -> None:
        """T1: the current policy becomes the reference."""
        if self.refreshable:
            from rlxf.parallel.distributed import gathered  # a sharded policy is made whole (a collective)

            state = gathered({name: t.detach() for name, t in self.policy.state_dict().items()})
            self.state = self.ray.put({name: t.cpu() for name, t in state.items()})
            self.workers[0].load_state.remote(self.state)

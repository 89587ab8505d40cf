"""Sampling from the geometric mixture of the policy and the reference, Nash-MD's opponent.

Munos et al., "Nash Learning from Human Feedback" (2023): Nash-MD plays against
π^α ∝ π^(1-α) μ^α. As TRL's trainer does, the mixture is taken token by token: at each step the
next token is drawn from softmax((1 - α) log π(·|prefix) + α log μ(·|prefix)), each step
normalized on its own (the sequence-level mixture has no tractable sampler). Unlike TRL's
wrapper, both models decode with a KV cache.
"""

from __future__ import annotations

import torch
from torch import nn

from rlxf.data.templating import ChatEncoder
from rlxf.rollout.base import SamplingParams
from rlxf.rollout.cpu_decode import growing_cache
from rlxf.rollout.hf import ChatEngine, _SampleByInverseCdf


class GeometricMixtureEngine(ChatEngine):
    """Samples from π^(1-α) μ^α, token by token, for the prompts it is given."""

    def __init__(
        self, policy: nn.Module, reference: nn.Module, encoder: ChatEncoder, *, alpha: float, batch_size: int = 32
    ):
        if not 0 <= alpha <= 1:
            raise ValueError(f"the mixture weight alpha must be in [0, 1], got {alpha}")
        super().__init__(encoder)
        self.policy, self.reference, self.alpha, self.batch_size = policy, reference, alpha, batch_size

    @torch.no_grad()
    def _sample(self, encoded, index, sampling: SamplingParams, seeds):
        was_training = self.policy.training
        self.policy.eval()
        completions, logprob_rows = [], []
        for start in range(0, len(index), self.batch_size):
            rows = [encoded[i] for i in index[start : start + self.batch_size]]
            ids, logprobs = self._decode(rows, sampling)
            completions += ids
            logprob_rows += logprobs
        self.policy.train(was_training)
        return completions, logprob_rows

    def _decode(self, prompts: list[list[int]], sampling: SamplingParams):
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        room = width + sampling.max_new_tokens + 1
        caches = [growing_cache(m.config, room) for m in (self.policy, self.reference)]
        sampler = _SampleByInverseCdf(1.0, sampling.top_p) if sampling.temperature > 0 else None
        tokens, logprobs = [[] for _ in prompts], [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool)
        step_ids, step_positions = input_ids, positions
        for _ in range(sampling.max_new_tokens):
            mixed = self._mixed_scores(step_ids, attention, step_positions, caches, sampling.temperature)
            picks, picked = (mixed.argmax(-1), mixed.max(-1).values) if sampler is None else sampler.draw(mixed)
            for row in range(len(prompts)):
                if not done[row]:
                    tokens[row].append(int(picks[row]))
                    logprobs[row].append(float(picked[row]))
            done |= picks == self.tokenizer.eos_token_id
            if bool(done.all()):
                break
            attention = torch.cat([attention, attention.new_ones(len(prompts), 1)], dim=1)
            step_ids, step_positions = picks[:, None], step_positions[:, -1:] + 1
        return tokens, logprobs

    def _mixed_scores(self, ids, attention, positions, caches, temperature: float) -> torch.Tensor:
        """(B, V) log-probs of the mixture for the next token (the temperature applied to each model)."""
        scale = temperature if temperature > 0 else 1.0
        logps = []
        for model, cache in zip((self.policy, self.reference), caches):
            logits = model(
                input_ids=ids, attention_mask=attention, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1].float()  # fmt: skip
            logps.append(torch.log_softmax(logits / scale, dim=-1))
        return torch.log_softmax((1 - self.alpha) * logps[0] + self.alpha * logps[1], dim=-1)

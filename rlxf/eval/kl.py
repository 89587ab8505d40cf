"""KL divergence of a policy from its reference along the policy's own responses."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from rlxf.data.batching import pack, token_budget_batches
from rlxf.models.logprobs import hidden_states
from rlxf.models.lora import unwrap


def _completion_hidden(model: nn.Module, sequences) -> tuple[Tensor, Tensor]:
    batch = pack(sequences)
    return hidden_states(model, batch).flatten(0, 1)[batch.score_index], batch.score_owner


@torch.no_grad()
def sequence_kl(
    policy: nn.Module,
    reference: nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    *,
    chunk: int = 256,
    max_tokens: int = 4096,
) -> Tensor:
    """Σ_t KL(π(·|x, y<t) || π_ref(·|x, y<t)) over each response's tokens, (S,).

    For responses sampled from π at temperature 1, its expectation is the sequence-level
    KL(π || π_ref) (Schulman, "Approximating KL Divergence", 2020): the full-vocabulary
    sum per position has lower variance than the single-sample log-ratio.
    """
    totals = torch.zeros(len(sequences))
    head_p, head_r = unwrap(policy).get_output_embeddings(), unwrap(reference).get_output_embeddings()
    for batch in token_budget_batches([len(p) + len(r) for p, r in sequences], max_tokens):
        h_policy, owners = _completion_hidden(policy, [sequences[i] for i in batch])
        h_reference, _ = _completion_hidden(reference, [sequences[i] for i in batch])
        per_token = torch.empty(h_policy.shape[0])
        for start in range(0, h_policy.shape[0], chunk):
            rows = slice(start, start + chunk)
            logp = head_p(h_policy[rows]).float().log_softmax(-1)
            logq = head_r(h_reference[rows]).float().log_softmax(-1)
            per_token[rows] = (logp.exp() * (logp - logq)).sum(-1)
        totals[batch] = torch.zeros(len(batch)).index_add(0, owners, per_token)
    return totals

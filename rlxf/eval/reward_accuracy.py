"""How well a reward model orders held-out preference pairs, and the length baseline it must beat."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rlxf.data import Preference, pad
from rlxf.data.batching import token_budget_batches
from rlxf.data.templating import ChatEncoder
from rlxf.eval.stats import proportion
from rlxf.models import reward_scores

Pair = tuple[list[int], list[int]]  # token ids of (chosen sequence, rejected sequence)


def encode_scored_pairs(encoder: ChatEncoder, records: Sequence[Preference]) -> list[Pair]:
    """Each pair as (prompt + chosen, prompt + rejected) token ids: what a reward model scores."""
    pairs = []
    for record in records:
        encoded = encoder.encode(record.prompt, [record.chosen, record.rejected], record.source)
        pairs.append((encoded.prompt + encoded.completions[0], encoded.prompt + encoded.completions[1]))
    return pairs


def score_pair_batch(model: nn.Module, pairs: Sequence[Pair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of chosen and rejected sequences, (B,) each, in one padded forward pass."""
    sequences = [(chosen, []) for chosen, _ in pairs] + [(rejected, []) for _, rejected in pairs]
    batch = pad(sequences, pad_id)
    scores = reward_scores(model, batch.input_ids, batch.attention_mask)
    return scores[: len(pairs)], scores[len(pairs) :]


def score_pairs_and_singles(
    model: nn.Module, pairs: Sequence[Pair], singles: Sequence[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of chosen and rejected sequences (B,) and of single sequences (S,), in one padded
    forward pass (one forward per backward, as data parallelism wants)."""
    sequences = [(c, []) for c, _ in pairs] + [(r, []) for _, r in pairs] + [(s, []) for s in singles]
    batch = pad(sequences, pad_id)
    scores = reward_scores(model, batch.input_ids, batch.attention_mask)
    b = len(pairs)
    return scores[:b], scores[b : 2 * b], scores[2 * b :]


@torch.no_grad()
def pairwise_accuracy(
    model: nn.Module, pairs: Sequence[Pair], ties: Sequence[bool], pad_id: int, max_tokens: int = 8192
) -> dict:
    """Share of non-tied held pairs where the chosen response gets the higher reward."""
    was_training = model.training
    model.eval()
    decided = sorted((p for p, tie in zip(pairs, ties) if not tie), key=lambda p: max(len(p[0]), len(p[1])))
    margins = []
    for batch in token_budget_batches([2 * max(len(c), len(r)) for c, r in decided], max_tokens):
        chosen, rejected = score_pair_batch(model, [decided[i] for i in batch], pad_id)
        margins += (chosen - rejected).tolist()
    outcomes = [float(m > 0) for m in margins]
    model.train(was_training)
    estimate = proportion(outcomes)
    return {
        "accuracy": estimate.value,
        "accuracy_interval": [estimate.low, estimate.high],
        "pairs": estimate.n,
        "p_value_vs_chance": estimate.p_value_vs_half,
        "mean_margin": sum(margins) / max(1, len(margins)),
    }


def length_baseline(records: Sequence[Preference]) -> dict:
    """Accuracy of 'the longer response (in characters) wins' on the non-tied pairs the reward
    model is scored on; equal lengths count half."""
    decided = [r for r in records if not r.tie]
    estimate = proportion(
        [1.0 if len(r.chosen) > len(r.rejected) else 0.5 if len(r.chosen) == len(r.rejected) else 0.0 for r in decided]
    )
    return {"longer_wins": estimate.value, "longer_wins_interval": [estimate.low, estimate.high], "pairs": estimate.n}

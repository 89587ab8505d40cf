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


@torch.no_grad()
def score_sequences(
    model: nn.Module, sequences: Sequence[list[int]], pad_id: int, max_tokens: int = 8192
) -> list[float]:
    """The scalar head's score of each sequence, in eval mode, batched by length."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    for batch in token_budget_batches([len(sequences[i]) for i in order], max_tokens):
        rows = [order[i] for i in batch]
        padded = pad([(sequences[i], []) for i in rows], pad_id)
        for row, value in zip(rows, reward_scores(model, padded.input_ids, padded.attention_mask).tolist()):
            scores[row] = value
    model.train(was_training)
    return scores


@torch.no_grad()
def classifier_accuracy(
    model: nn.Module, sequences: Sequence[list[int]], labels: Sequence[float], pad_id: int, bins: int = 10
) -> dict:
    """A binary classifier of feedback on held-out responses: accuracy (P > ½, 95% interval), AUROC
    (the chance a positive response scores above a negative one, ties half: Mann–Whitney) and the
    expected calibration error of P(the observed label)."""
    return classifier_metrics(score_sequences(model, sequences, pad_id), labels, bins)


def classifier_metrics(logits: Sequence[float], labels: Sequence[float], bins: int = 10) -> dict:
    """:func:`classifier_accuracy` from the classifier's logits."""
    from rlxf.eval.calibration import accuracy_and_calibration

    probabilities = torch.sigmoid(torch.tensor(logits)).tolist()
    result = accuracy_and_calibration([p if y > 0 else 1 - p for p, y in zip(probabilities, labels)], bins)
    result.update(
        responses=result.pop("n"),
        auroc=auroc(logits, labels),
        positive_rate=sum(1 for y in labels if y > 0) / max(1, len(labels)),
    )
    return result


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve: P(score of a random positive > that of a random negative), ties ½
    (the Mann–Whitney U from average ranks); None without both classes."""
    positives = sum(1 for y in labels if y > 0)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks, start = [0.0] * len(scores), 0
    while start < len(order):  # tied scores share their average rank
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    positive_ranks = sum(r for r, y in zip(ranks, labels) if y > 0)
    return (positive_ranks - positives * (positives + 1) / 2) / (positives * negatives)


def error_detection(model: nn.Module, sequences: Sequence[list[int]], labels: Sequence[float], pad_id: int) -> dict:
    """A classifier of segments with (label 0) or without (1) an error, reported as Wu et al. (2023)
    report their fine-grained reward models: :func:`classifier_accuracy`, precision, recall and F1
    of each class, and the accuracy of always answering "error" or always "no error"."""
    logits = score_sequences(model, sequences, pad_id)
    result = classifier_metrics(logits, labels)
    said_error, is_error = [x <= 0 for x in logits], [y <= 0 for y in labels]  # P(no error) <= 1/2
    for name, said, truth in (("error", said_error, is_error), ("no_error", _not(said_error), _not(is_error))):
        hits = sum(s and t for s, t in zip(said, truth))
        precision, recall = hits / max(1, sum(said)), hits / max(1, sum(truth))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.update({f"{name}_precision": precision, f"{name}_recall": recall, f"{name}_f1": f1})
    result["all_error_accuracy"] = sum(is_error) / max(1, len(labels))
    result["all_no_error_accuracy"] = 1 - result["all_error_accuracy"]
    return result


def _not(values: list[bool]) -> list[bool]:
    return [not v for v in values]

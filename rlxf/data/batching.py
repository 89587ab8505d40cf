"""Lay tokenized sequences out for a forward pass: packed (decoders) or padded (encoders).

Packed: everything end to end in one row, no padding. A prompt shared by several
completions (chosen and rejected of a pair) is laid down once; each completion sees
the prompt and itself (see :mod:`rlxf.models.packing`). Positions restart per prompt.
Padded: one sequence per row, right-padded, with an attention mask.

Either way the batch records, for every completion token, which hidden state predicts
it (``score_index``), so log-probs are computed only where they are needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

Tokens = Sequence[int]
Sequences = Sequence[tuple[Tokens, Tokens]]  # (prompt ids, completion ids)
Groups = Sequence[tuple[Tokens, Sequence[Tokens]]]  # (prompt ids, [completion ids, ...])


@dataclass(frozen=True)
class Segment:
    """One prompt and its completions, laid out P C1 C2 ... from ``start`` in a packed row."""

    start: int
    prompt_length: int
    completion_lengths: tuple[int, ...]


@dataclass
class TokenBatch:
    """Sequences ready for one forward pass."""

    input_ids: Tensor  # (R, T) token ids
    position_ids: Tensor  # (R, T) positions within each sequence
    attention_mask: Tensor | None  # (R, T) 1 on real tokens (padded layout); None when packed
    score_index: Tensor  # (N,) flat index r*T + t of the hidden state that predicts each completion token
    score_targets: Tensor  # (N,) the completion tokens
    score_owner: Tensor  # (N,) the sequence each completion token belongs to
    num_sequences: int  # S, sequences in order (group by group, completion by completion)
    num_tokens: int  # real (non-padding) tokens in the batch
    segments: tuple[Segment, ...] | None = None  # packed layout, for attention

    def to(self, device: torch.device) -> TokenBatch:
        """The same batch with its tensors on ``device`` (itself when they are there already)."""
        if self.input_ids.device == torch.device(device):
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            input_ids=move(self.input_ids),
            position_ids=move(self.position_ids),
            attention_mask=move(self.attention_mask),
            score_index=move(self.score_index),
            score_targets=move(self.score_targets),
        )

    def attention_kwargs(self) -> dict:
        """Layout for attention kernels that read it (see rlxf.models.packing)."""
        return {} if self.segments is None else {"rlxf_segments": self.segments}


def pack(sequences: Sequences) -> TokenBatch:
    """Each (prompt, completion) its own sequence, all in one row."""
    return pack_groups([(prompt, [completion]) for prompt, completion in sequences])


def pack_groups(groups: Groups) -> TokenBatch:
    """Prompts laid down once with all their completions; sequence order is group by group."""
    ids, positions, index, targets, owner, segments = [], [], [], [], [], []
    sequence = 0
    for prompt, completions in groups:
        if not prompt:
            raise ValueError("every sequence needs at least one prompt token to predict its completion from")
        start = len(ids)
        ids.extend(prompt)
        positions.extend(range(len(prompt)))
        for completion in completions:
            predictor = start + len(prompt) - 1  # the prompt's last token predicts each completion's first
            for offset, token in enumerate(completion):
                index.append(predictor)
                targets.append(token)
                owner.append(sequence)
                predictor = len(ids) + offset
            ids.extend(completion)
            positions.extend(range(len(prompt), len(prompt) + len(completion)))
            sequence += 1
        segments.append(Segment(start, len(prompt), tuple(len(c) for c in completions)))
    return TokenBatch(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([positions]),
        attention_mask=None,
        score_index=torch.tensor(index, dtype=torch.long),
        score_targets=torch.tensor(targets, dtype=torch.long),
        score_owner=torch.tensor(owner, dtype=torch.long),
        num_sequences=sequence,
        num_tokens=len(ids),
        segments=tuple(segments),
    )


def pad(sequences: Sequences, pad_token_id: int) -> TokenBatch:
    """One sequence per row, right-padded to the longest."""
    width = max(len(p) + len(r) for p, r in sequences)
    rows = len(sequences)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    index, targets, owner = [], [], []
    for row, (prompt, completion) in enumerate(sequences):
        tokens = list(prompt) + list(completion)
        if completion and not prompt:
            raise ValueError("a scored completion needs at least one prompt token before it")
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        for t in range(len(prompt), len(tokens)):
            index.append(row * width + t - 1)
            targets.append(tokens[t])
            owner.append(row)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(
        input_ids,
        positions,
        attention,
        torch.tensor(index, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(owner, dtype=torch.long),
        rows,
        int(attention.sum()),
    )


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group sequence indices (in order) into batches of at most ``max_tokens`` tokens."""
    batches, current, used = [], [], 0
    for index, length in enumerate(lengths):
        if current and used + length > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        batches.append(current)
    return batches

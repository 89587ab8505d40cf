"""Single responses labeled harmless or harmful, for the classification term of `rlxf cm`'s loss
(Safe RLHF, Eq. 6: ``-log σ(s · C(y))``, ``s = +1`` harmful, ``-1`` harmless).

A labels file rarely has as many rows as the pairs: a step takes the next ``ceil(labels / steps per
epoch)`` of a seeded order, so one epoch of pairs sees every label once, and a resumed run takes
the same ones as an uninterrupted run.
"""

from __future__ import annotations

import math

import torch

from rlxf.config import DataSection
from rlxf.data.formats import read_labeled
from rlxf.data.split import split_by_group
from rlxf.data.templating import ChatEncoder
from rlxf.eval.reward_accuracy import score_sequences
from rlxf.eval.stats import proportion
from rlxf.losses.safety import sign_loss
from rlxf.parallel import distributed
from rlxf.recipes.common import encode_completions, report_bad_rows, resolve_path, say
from rlxf.train.run import MetricSums


class SafetyLabels:
    def __init__(self, train: list, held: list, seed: int):
        if not train:
            raise ValueError("the safety labels file has no training rows after the held-out split")
        self.train, self.held, self.seed = train, held, seed
        self.signs = torch.tensor([-1.0 if r.desirable else 1.0 for r in train])  # label 1: harmless
        self.weights = torch.tensor([r.weight for r in train]) / sum(r.weight for r in train) * len(train)
        self._sequences: list[list[int]] = []
        self._held_sequences: list[list[int]] = []
        self.per_step = len(train)
        self.pad_id = 0

    @classmethod
    def load(cls, path: str, data: DataSection, seed: int) -> "SafetyLabels":
        """The labels file split as the pairs are (by first user turn, data.eval_fraction)."""
        resolved = resolve_path(path)
        records, bad = read_labeled(resolved, on_bad_row=data.on_bad_row)
        report_bad_rows(bad, resolved)
        train, held = split_by_group(records, data.eval_fraction, seed=data.split_seed)
        say(f"safety labels: {len(train)} training, {len(held)} held-out responses from {resolved}")
        return cls(train, held, seed)

    def encode(self, encoder: ChatEncoder, pad_id: int, *, steps_per_epoch: int) -> None:
        self._sequences = [p + c for p, c in encode_completions(encoder, self.train)]
        self._held_sequences = [p + c for p, c in encode_completions(encoder, self.held)]
        self.per_step = math.ceil(len(self.train) / max(1, steps_per_epoch))
        self.order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        self.pad_id = pad_id

    def due(self, step: int) -> list[int]:
        """This rank's labeled responses for ``step`` (indices into the training labels)."""
        count = len(self.order)
        positions = [(step * self.per_step + k) % count for k in range(self.per_step)]
        return [self.order[p] for p in distributed.shard(positions)]

    def sequences(self, indices: list[int]) -> list[list[int]]:
        return [self._sequences[i] for i in indices]

    def loss(self, scores: torch.Tensor, indices: list[int], sums: MetricSums) -> torch.Tensor:
        """The classification term over this step's labeled responses (their global count divides it)."""
        per_response, metrics = sign_loss(scores, self.signs[indices])
        sums.add(metrics)
        return (per_response * self.weights[indices]).sum() / self.per_step

    def held_out_accuracy(self, model) -> dict:
        """Share of held-out labeled responses on the right side of cost 0 (harmful > 0 > harmless)."""
        if not self.held:
            return {}
        costs = score_sequences(model, self._held_sequences, self.pad_id)
        signs = [-1.0 if r.desirable else 1.0 for r in self.held]
        estimate = proportion([float(s * c > 0) for s, c in zip(signs, costs)])
        return {
            "sign_accuracy": estimate.value,
            "sign_accuracy_interval": [estimate.low, estimate.high],
            "labeled_responses": estimate.n,
        }

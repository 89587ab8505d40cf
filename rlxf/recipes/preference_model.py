"""`rlxf pm`: a general preference model P(y ≻ y' | x), learned from pairwise preferences.

A classifier reads the prompt and both responses and scores the pair in each order; the logit
z = (f(x, a, b) - f(x, b, a)) / 2 makes P(a ≻ b) = σ(z) = 1 - P(b ≻ a) by construction. Unlike a
Bradley-Terry reward model it needs no scalar reward behind the preferences, so it can represent
intransitive ones; it is the oracle of the Nash learners (`rlxf nash`, SPO's win-rate reward).

Loop: batch of pairs -> both orders -> antisymmetric logit -> cross-entropy -> step. Ends with
held-out accuracy (95% interval) and calibration: expected calibration error and a reliability
plot (``reliability.png``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rlxf.config import DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data import Preference
from rlxf.data.batching import token_budget_batches
from rlxf.data.pairs import pair_inputs
from rlxf.data.templating import ChatEncoder
from rlxf.eval.calibration import accuracy_and_calibration, plot_reliability
from rlxf.losses import general_preference, sequence_mean
from rlxf.models import preference_logits
from rlxf.recipes.common import (
    build_reward_model,
    encoder_for,
    example_weights,
    load_preference_splits,
    save_results,
    say,
)
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums

PairInput = tuple[list[int], list[int]]  # token ids of (prompt, A = chosen, B = rejected) and swapped


@dataclass
class PreferenceModelConfig:
    output_dir: str = "runs/pm"
    """Where checkpoints, metrics, eval.json, reliability.png and the final model (model/) go."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head is added and reads both responses at once."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=256, max_prompt_length=128))
    """Pairwise preferences; max_length bounds the prompt with each response (a pair input holds both)."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=2, batch_size=16, lr=5e-5))
    """Optimization; batch_size counts pairs."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    calibration_bins: int = 10
    """Equal-width confidence bins on [½, 1] for the expected calibration error."""


def encode_pair_inputs(encoder: ChatEncoder, records: Sequence[Preference]) -> list[PairInput]:
    return [pair_inputs(encoder, r.prompt, r.chosen, r.rejected, r.source) for r in records]


def pair_logits(model: nn.Module, pairs: Sequence[PairInput], pad_id: int) -> torch.Tensor:
    """z of each (chosen, rejected) pair: σ(z) = P(chosen ≻ rejected)."""
    return preference_logits(model, [ab for ab, _ in pairs], [ba for _, ba in pairs], pad_id)


@torch.no_grad()
def held_out_preferences(
    model: nn.Module, pairs: Sequence[PairInput], ties: Sequence[bool], pad_id: int, *, bins: int = 10
) -> dict:
    """Accuracy (P(chosen ≻ rejected) > ½ on non-tied pairs, 95% interval) and calibration."""
    was_training = model.training
    model.eval()
    decided = sorted((p for p, tie in zip(pairs, ties) if not tie), key=lambda p: len(p[0]))
    probabilities: list[float] = []
    for batch in token_budget_batches([2 * len(ab) for ab, _ in decided], 8192):
        probabilities += torch.sigmoid(pair_logits(model, [decided[i] for i in batch], pad_id)).tolist()
    model.train(was_training)
    result = accuracy_and_calibration(probabilities, bins)
    result["pairs"] = result.pop("n")
    return result


def train_preference_model(config: PreferenceModelConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    train_records, held_records, data_summary = load_preference_splits(config.data)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    train_pairs, held_pairs = encode_pair_inputs(encoder, train_records), encode_pair_inputs(encoder, held_records)
    say(f"tokenized: {encoder.stats.summary()}")
    pad_id, bins = tokenizer.pad_token_id, config.calibration_bins
    ties, weights = torch.tensor([r.tie for r in train_records]), example_weights(train_records)
    held_ties = [r.tie for r in held_records]

    model.train()
    run = Run(
        output_dir,
        model,
        config.train,
        num_examples=len(train_pairs),
        lengths=[len(ab) for ab, _ in train_pairs],
        name="preference model",
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
        progress_keys=("loss", "rewards/accuracy"),
    )
    for batch in run.steps():
        sums, total = MetricSums(), 0.0
        for micro in run.micro_batches(batch):
            logits = run.forward(pair_logits, [train_pairs[i] for i in micro], pad_id)
            per_pair, metrics = general_preference(logits, tie=ties[micro])
            loss = sequence_mean(per_pair * weights[micro], run.global_batch_size)
            loss.backward()
            total += loss.item()
            sums.add(metrics)
        run.end_step(total, sums.means())
        if run.eval_due():
            run.log_eval(_scalars(run.evaluate(held_out_preferences, model, held_pairs, held_ties, pad_id, bins=bins)))
    held = run.evaluate(held_out_preferences, model, held_pairs, held_ties, pad_id, bins=bins)
    results = {"held_out": held, "data": data_summary, "truncation": dataclasses.asdict(encoder.stats)}
    run.log_eval(_scalars(held))
    run.finish()
    if held:
        plot_reliability(Path(output_dir) / "reliability.png", {**held, "bins": held["calibration_bins"]},
                         title="Preference model, held-out pairs")  # fmt: skip
        say(
            f"preference model: held-out accuracy {held['accuracy']:.3f}, ECE {held['ece']:.3f} on {held['pairs']} pairs"
        )
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title="Preference model",
        recipe="pm",
        base_model=config.model.name,
        config=config,
        settings={
            "kind": "preference_model",
            "max_length": config.data.max_length,
            "max_prompt_length": config.data.prompt_limit,
        },  # fmt: skip
        trained=run.trained_now,
    )
    return results


def _scalars(held: dict | None) -> dict:
    return {k: v for k, v in (held or {}).items() if k != "calibration_bins"}

"""`rlxf rm`: learn a scalar reward model from pairwise preferences (Bradley-Terry).

Loop: batch of pairs -> score chosen and rejected -> Bradley-Terry loss -> step.
Ends with pairwise accuracy on held-out pairs (95% interval) beside a length baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rlxf.config import DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data import Preference, pad
from rlxf.data.templating import ChatEncoder
from rlxf.eval.stats import proportion
from rlxf.losses import bradley_terry, sequence_mean
from rlxf.models import reward_scores
from rlxf.recipes.common import (
    example_weights,
    build_reward_model,
    encoder_for,
    load_preference_splits,
    save_results,
    say,
    token_budget_batches,
    write_config,
)
from rlxf.train import Run
from rlxf.train.run import MetricSums


@dataclass
class RewardModelConfig:
    output_dir: str = "runs/rm"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head is added (any encoder or causal LM)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512, max_prompt_length=384))
    """Pairwise preferences."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=2, batch_size=16, lr=5e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    use_margin: bool = False
    """Use each pair's margin in the loss (Llama 2 style)."""


Pair = tuple[list[int], list[int]]  # token ids of (chosen sequence, rejected sequence)


def encode_pairs(encoder: ChatEncoder, records: Sequence[Preference]) -> list[Pair]:
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


def train_reward_model(config: RewardModelConfig) -> dict:
    output_dir = Path(config.output_dir)
    write_config(output_dir, config)
    torch.manual_seed(config.train.seed)
    train_records, held_records, data_summary = load_preference_splits(config.data)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    train_pairs, held_pairs = encode_pairs(encoder, train_records), encode_pairs(encoder, held_records)
    say(f"tokenized: {encoder.stats.summary()}")
    pad_id = tokenizer.pad_token_id
    ties = torch.tensor([r.tie for r in train_records])
    margins = torch.tensor([r.margin or 0.0 for r in train_records])
    weights = example_weights(train_records)
    held_ties = [r.tie for r in held_records]

    model.train()
    run = Run(
        output_dir,
        model,
        config.train,
        num_examples=len(train_pairs),
        lengths=[max(len(c), len(r)) for c, r in train_pairs],
        name="reward model",
        strategy=config.distributed.strategy,
    )
    for batch in run.steps():
        sums, total = MetricSums(), 0.0
        for micro in run.micro_batches(batch):
            chosen, rejected = run.forward(score_pair_batch, [train_pairs[i] for i in micro], pad_id)
            per_pair, metrics = bradley_terry(
                chosen,
                rejected,
                tie=ties[micro],
                margin=margins[micro] if config.use_margin else None,
            )
            loss = sequence_mean(per_pair * weights[micro], run.global_batch_size)
            loss.backward()
            total += loss.item()
            sums.add(metrics)
        run.end_step(total, sums.means())
        if run.eval_due():
            run.log_eval(run.evaluate(pairwise_accuracy, model, held_pairs, held_ties, pad_id))
    results = {
        "held_out": run.evaluate(pairwise_accuracy, model, held_pairs, held_ties, pad_id),
        "length_baseline": length_baseline(held_records),
        "data": data_summary,
        "truncation": dataclasses.asdict(encoder.stats),
    }
    run.log_eval(results["held_out"])
    run.finish()
    say(
        f"reward model: held-out accuracy {results['held_out']['accuracy']:.3f} on {results['held_out']['pairs']} pairs "
        f"(longer-wins baseline {results['length_baseline']['longer_wins']:.3f})"
    )
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title="Reward model",
        recipe="rm",
        base_model=config.model.name,
        config=config,
        settings={
            "kind": "reward_model",
            "max_length": config.data.max_length,
            "max_prompt_length": config.data.max_prompt_length,
        },
    )
    return results

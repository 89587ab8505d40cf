"""`rlxf rm`: learn a scalar reward model from pairwise preferences (Bradley-Terry).

Loop: batch of pairs -> score chosen and rejected -> Bradley-Terry loss -> step.
Ends with pairwise accuracy on held-out pairs (95% interval) beside a length baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rlxf.config import DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.eval.reward_accuracy import encode_scored_pairs, length_baseline, pairwise_accuracy, score_pair_batch
from rlxf.losses import bradley_terry, sequence_mean
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


@dataclass
class RewardModelConfig:
    output_dir: str = "runs/rm"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head is added (any encoder or causal LM)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Pairwise preferences."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=2, batch_size=16, lr=5e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    use_margin: bool = False
    """Use each pair's margin in the loss (Llama 2 style)."""


def train_reward_model(config: RewardModelConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    train_records, held_records, data_summary = load_preference_splits(config.data)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    train_pairs, held_pairs = encode_scored_pairs(encoder, train_records), encode_scored_pairs(encoder, held_records)
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
        tokenizer=tokenizer,
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
            "max_prompt_length": config.data.prompt_limit,
        },
        trained=run.trained_now,
    )
    return results

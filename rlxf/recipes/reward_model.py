"""`rlxf rm`: learn a scalar reward model from pairwise preferences (Bradley-Terry); `rlxf cm`: a
cost model from harmlessness preferences and harmful/harmless labels (Safe RLHF).

Loop: batch of pairs -> score chosen and rejected -> Bradley-Terry (or the cost model's) loss -> step.
Ends with pairwise accuracy on held-out pairs (95% interval) beside a length baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rlxf.config import Checked, DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.eval.reward_accuracy import encode_scored_pairs, length_baseline, pairwise_accuracy, score_pairs_and_singles
from rlxf.losses import bradley_terry, sequence_mean
from rlxf.losses.safety import cost_model_loss
from rlxf.recipes.common import (
    build_reward_model,
    encoder_for,
    example_weights,
    load_preference_splits,
    save_results,
    say,
)
from rlxf.recipes.cost_labels import SafetyLabels
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums


@dataclass
class RewardModelConfig(Checked):
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


@dataclass
class CostModelConfig(RewardModelConfig):
    output_dir: str = "runs/cm"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Pairwise harmlessness preferences: chosen is the safer (less harmful) response; optional
    chosen_safe / rejected_safe columns (true/false) label each response harmless or harmful."""
    labels_path: str = ""
    """Optional single responses labeled harmless (label 1) or harmful (label 0): the feedback app's
    labeled.jsonl layout. Each labeled response adds Safe RLHF's classification term, which puts cost 0
    on the boundary between harmless and harmful."""
    regularization: float = 0.0
    """η of the L2 term η (C(y_w)² + C(y_l)²) / 2 on the pairs' costs (Safe RLHF's script: 0.001)."""

    def check(self):
        if self.use_margin:
            raise ValueError("use_margin is for reward models: the cost model's loss (Safe RLHF) has no margin")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")


def train_reward_model(config: RewardModelConfig) -> dict:
    """A Bradley–Terry reward model: the chosen response scores higher."""

    def loss(chosen, rejected, micro):
        return bradley_terry(chosen, rejected, tie=ties[micro], margin=margins[micro] if config.use_margin else None)

    records, held_records, data_summary = load_preference_splits(config.data)
    ties = torch.tensor([r.tie for r in records])
    margins = torch.tensor([r.margin or 0.0 for r in records])
    return fit_pairs(config, records, held_records, data_summary, loss, title="Reward model", recipe="rm")


def train_cost_model(config: CostModelConfig) -> dict:
    """A cost model (Dai et al., "Safe RLHF", ICLR 2024, Eq. 6): the more harmful response costs more,
    and, where responses are labeled, harmful ones cost more than 0 and harmless ones less."""
    records, held_records, data_summary = load_preference_splits(config.data)
    labels = SafetyLabels.load(config.labels_path, config.data, config.train.seed) if config.labels_path else None
    ties = torch.tensor([r.tie for r in records])
    signs = [_signs([r.chosen_safe for r in records]), _signs([r.rejected_safe for r in records])]

    def loss(safer, costlier, micro):
        return cost_model_loss(
            safer,
            costlier,
            safer_sign=signs[0][micro],
            costlier_sign=signs[1][micro],
            tie=ties[micro],
            regularization=config.regularization,
        )

    return fit_pairs(
        config, records, held_records, data_summary, loss, title="Cost model", recipe="cm", labels=labels, cost=True
    )


def _signs(safe: list[bool | None]) -> torch.Tensor:
    """Safe RLHF's cost signs: +1 harmful, -1 harmless, 0 unlabeled."""
    return torch.tensor([0.0 if s is None else -1.0 if s else 1.0 for s in safe])


def fit_pairs(config, records, held_records, data_summary, pair_loss, *, title, recipe, labels=None, cost=False):
    """The loop both recipes share: score each pair's two responses (and a cost model's labeled
    responses due this step), ``pair_loss(chosen_scores, rejected_scores, pair_indices)``, step; then
    held-out accuracy and the report.
    A cost model's held-out accuracy counts the rejected (more harmful) response costing more."""
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    # a cost model's held-out pairs are scored costlier first: "accuracy" is then the share it orders right
    held_pairs = [(r, c) if cost else (c, r) for c, r in encode_scored_pairs(encoder, held_records)]
    train_pairs = encode_scored_pairs(encoder, records)
    if labels is not None:
        labels.encode(encoder, tokenizer.pad_token_id, steps_per_epoch=-(-len(train_pairs) // config.train.batch_size))
    say(f"tokenized: {encoder.stats.summary()}")
    pad_id = tokenizer.pad_token_id
    weights = example_weights(records)
    held_ties = [r.tie for r in held_records]

    model.train()
    run = Run(
        output_dir,
        model,
        config.train,
        num_examples=len(train_pairs),
        lengths=[max(len(c), len(r)) for c, r in train_pairs],
        name=title.lower(),
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
    )
    for batch in run.steps():
        sums, total = MetricSums(), 0.0
        for micro_index, micro in enumerate(run.micro_batches(batch)):
            singles = labels.due(run.step) if labels is not None and micro_index == 0 else []
            pairs = [train_pairs[i] for i in micro]
            chosen, rejected, single_scores = run.forward(
                score_pairs_and_singles, pairs, labels.sequences(singles) if singles else [], pad_id
            )
            per_pair, metrics = pair_loss(chosen, rejected, micro)
            loss = sequence_mean(per_pair * weights[micro], run.global_batch_size)
            if singles:
                loss = loss + labels.loss(single_scores, singles, sums)
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
    if labels is not None:
        results["held_out"].update(run.evaluate(labels.held_out_accuracy, model))
    run.log_eval(results["held_out"])
    run.finish()
    held = results["held_out"]
    say(
        f"{title.lower()}: held-out accuracy {held['accuracy']:.3f} on {held['pairs']} pairs "
        f"(longer-wins baseline {results['length_baseline']['longer_wins']:.3f})"
    )
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title=title,
        recipe=recipe,
        base_model=config.model.name,
        config=config,
        settings={
            "kind": "cost_model" if cost else "reward_model",
            "max_length": config.data.max_length,
            "max_prompt_length": config.data.prompt_limit,
        },
        trained=run.trained_now,
    )
    return results

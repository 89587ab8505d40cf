"""`rlxf reactions`: learn P[positive reaction | prompt, response] from users' binary feedback.

Han et al., "Reinforcement Learning from User Feedback" (2025): a classifier of implicit binary
reactions (their P[Love]), trained with binary cross-entropy and used as a reward beside a
helpfulness reward (``rewards=[{kind: reward_model, ...}, {kind: reaction_model, model: ..., weight: 0.3}]``);
they report that pushing it too hard teaches sign-offs such as "Sending love!", which the
over-optimization watch (``watch.gold``) is there to catch.

Loop: batch of labeled responses -> score -> binary cross-entropy -> step. Data: the feedback app's
``labeled.jsonl`` (reactions: love/like 1, dislike 0) or any file of prompt, completion, label.
Ends with held-out accuracy, AUROC and calibration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlxf.config import Checked, DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data.formats import read_labeled
from rlxf.data.records import Labeled
from rlxf.eval.reward_accuracy import classifier_accuracy, score_pairs_and_singles
from rlxf.losses import sequence_mean
from rlxf.losses.reward import binary_feedback
from rlxf.recipes.common import (
    build_reward_model,
    encode_completions,
    encoder_for,
    example_weights,
    load_splits,
    save_results,
    say,
)
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums


@dataclass
class ReactionModelConfig(Checked):
    output_dir: str = "runs/reactions"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head (the logit of P[positive]) is added."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Labeled responses: prompt, completion, label (1 positive reaction, 0 negative)."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=2, batch_size=16, lr=5e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""


def _read(path, format, on_bad_row):  # noqa: A002 (load_splits passes the data section's format)
    return read_labeled(path, on_bad_row=on_bad_row)


def train_reaction_model(config: ReactionModelConfig) -> dict:
    records, held_records, data_summary = load_splits(config.data, _read, "responses")
    trained = train_binary_classifier(config, records, held_records, classifier_accuracy, name="reaction model")
    results = {"held_out": trained.held_out, "data": data_summary, "truncation": trained.truncation}
    auroc = "n/a" if trained.held_out["auroc"] is None else f"{trained.held_out['auroc']:.3f}"
    say(
        f"reaction model: held-out accuracy {trained.held_out['accuracy']:.3f}, AUROC {auroc} "
        f"on {trained.held_out['responses']} responses"
    )
    trained.save(config, results, title="Reaction model", recipe="reactions", kind="reaction_model")
    return results


@dataclass
class TrainedClassifier:
    """What :func:`train_binary_classifier` leaves: its held-out results and what saving needs."""

    held_out: dict
    truncation: dict
    run: Run
    tokenizer: object
    output_dir: Path

    def save(self, config, results: dict, *, title: str, recipe: str, kind: str, **settings) -> None:
        """eval.json (``results``) and model/, with the settings a reward source reads it back by."""
        save_results(
            self.output_dir,
            self.run.model,
            self.tokenizer,
            results,
            title=title,
            recipe=recipe,
            base_model=config.model.name,
            config=config,
            settings={
                "kind": kind,
                "max_length": config.data.max_length,
                "max_prompt_length": config.data.prompt_limit,
                **settings,
            },
            trained=self.run.trained_now,
        )


def train_binary_classifier(
    config, records: list[Labeled], held_records: list[Labeled], evaluate, *, name: str
) -> TrainedClassifier:
    """Binary cross-entropy on (prompt, completion, label) examples: the loop of `rlxf reactions`,
    shared by the classifiers built on it (``config`` has their model, data, train and distributed
    sections). ``evaluate(model, sequences, labels, pad_id)`` gives the held-out results."""
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    sequences = [p + c for p, c in encode_completions(encoder, records)]
    held = [p + c for p, c in encode_completions(encoder, held_records)]
    say(f"tokenized: {encoder.stats.summary()}")
    labels, weights, pad_id = torch.tensor([r.label for r in records]), example_weights(records), tokenizer.pad_token_id
    held_labels = [r.label for r in held_records]
    model.train()
    run = Run(
        output_dir,
        model,
        config.train,
        num_examples=len(sequences),
        lengths=[len(s) for s in sequences],
        name=name,
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
    )
    for batch in run.steps():
        sums, total = MetricSums(), 0.0
        for micro in run.micro_batches(batch):
            _, _, logits = run.forward(score_pairs_and_singles, [], [sequences[i] for i in micro], pad_id)
            per_response, metrics = binary_feedback(logits, labels[micro])
            loss = sequence_mean(per_response * weights[micro], run.global_batch_size)
            loss.backward()
            total += loss.item()
            sums.add(metrics)
        run.end_step(total, sums.means())
        if run.eval_due():
            run.log_eval(run.evaluate(evaluate, model, held, held_labels, pad_id))
    held_out = run.evaluate(evaluate, model, held, held_labels, pad_id)
    run.log_eval(held_out)
    run.finish()
    return TrainedClassifier(held_out, dataclasses.asdict(encoder.stats), run, tokenizer, output_dir)

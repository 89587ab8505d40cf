"""The loop of a binary classifier of responses (P[label 1 | prompt, response] by binary
cross-entropy), shared by `rlxf reactions` (user reactions) and `rlxf fgrm` (segments without an
error): batch of labeled responses -> score -> binary cross-entropy -> step -> held-out evaluation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from rlxf.config import ConfigError
from rlxf.data.records import Labeled
from rlxf.eval.reward_accuracy import score_pairs_and_singles
from rlxf.losses import sequence_mean
from rlxf.losses.reward import binary_feedback
from rlxf.recipes.common import build_reward_model, encode_completions, encoder_for, example_weights, save_results, say
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums


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
    config, records: list[Labeled], held_records: list[Labeled], evaluate, *, name: str, whole_completions: bool = False
) -> TrainedClassifier:
    """Binary cross-entropy on (prompt, completion, label) examples: the loop of `rlxf reactions`,
    shared by the classifiers built on it (``config`` has their model, data, train and distributed
    sections). ``evaluate(model, sequences, labels, pad_id)`` gives the held-out results;
    ``whole_completions`` refuses examples whose completion the input limit would cut."""
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_reward_model(config.model, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    sequences = [p + c for p, c in encode_completions(encoder, records)]
    held = [p + c for p, c in encode_completions(encoder, held_records)]
    say(f"tokenized: {encoder.stats.summary()}")
    if whole_completions and encoder.stats.completions_cut:  # what is judged sits at the completion's end
        raise ConfigError(
            f"{encoder.stats.completions_cut} examples lost the end of their completion (what is judged) to "
            f"data.max_length={config.data.max_length}: raise it, or lower data.max_prompt_length or context_chars"
        )
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

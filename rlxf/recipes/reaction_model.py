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

from dataclasses import dataclass, field

from rlxf.config import Checked, DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data.formats import read_labeled
from rlxf.eval.reward_accuracy import classifier_accuracy
from rlxf.recipes.classifier_loop import train_binary_classifier
from rlxf.recipes.common import (
    load_splits,
    say,
)


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

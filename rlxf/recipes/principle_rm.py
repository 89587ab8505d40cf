"""`rlxf principles`: a principle-conditioned binary reward model — P[the response satisfies the
principle | prompt, response, principle], with the principle stated in words.

Wang et al., "RLBFF: Binary Flexible Feedback to bridge between Human Feedback & Verifiable Rewards"
(2025): binary judgements of principles, one model for all of them, and the principles chosen when it
is used as a reward (``{kind: principle, model: ..., principles: ["The response is concise.", ...]}``).

Stages: judgements (:mod:`rlxf.data.principles`) -> held-out split by prompt (every principle of a
question on one side) -> binary cross-entropy on P[yes] -> held-out accuracy, AUROC and calibration
overall and per principle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rlxf.config import Checked, DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data.principles import principle_of, read_principle_judgements
from rlxf.eval.reward_accuracy import classifier_metrics, score_sequences
from rlxf.recipes.classifier_loop import train_binary_classifier
from rlxf.recipes.common import load_splits, say


@dataclass
class PrincipleRMConfig(Checked):
    output_dir: str = "runs/principles"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    passages: int = 0
    """qa-feedback rows: the passages each prompt holds, first ones first (0: all)."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head (the logit of P[the principle holds]) is added."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512, max_prompt_length=320))
    """The app's ratings.jsonl, the qa-feedback file, or rows of prompt, completion, principle, label."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=2, batch_size=16, lr=5e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""

    def check(self):
        if self.passages < 0:
            raise ValueError(f"passages must be >= 0 (0: all), got {self.passages}")


def train_principle_rm(config: PrincipleRMConfig) -> dict:
    def read(path, format, on_bad_row):  # noqa: A002 (load_splits passes the data section's format)
        return read_principle_judgements(path, passages=config.passages, on_bad_row=on_bad_row)

    records, held_records, data_summary = load_splits(config.data, read, "judgements")
    principles = [principle_of(r.prompt) for r in held_records]

    def evaluate(model, sequences, labels, pad_id):
        logits = score_sequences(model, sequences, pad_id)
        by_principle = defaultdict(list)
        for principle, logit, label in zip(principles, logits, labels):
            by_principle[principle].append((logit, label))
        result = classifier_metrics(logits, labels)
        result["per_principle"] = {
            p: {
                k: v
                for k, v in classifier_metrics(*zip(*pairs)).items()
                if k in ("accuracy", "responses", "positive_rate")
            }
            for p, pairs in sorted(by_principle.items())
        }
        return result

    trained = train_binary_classifier(config, records, held_records, evaluate, name="principle model")
    results = {"held_out": trained.held_out, "data": data_summary, "truncation": trained.truncation}
    say(
        f"principle model: held-out accuracy {trained.held_out['accuracy']:.3f} on {trained.held_out['responses']} "
        f"judgements of {len(trained.held_out['per_principle'])} principles"
    )
    trained.save(
        config, results, title="Principle-conditioned reward model", recipe="principles", kind="principle_model"
    )
    return results

"""`rlxf fgrm`: a fine-grained reward model — a classifier of whether each segment of a response
(sub-sentence, sentence, or the whole response) has an error of one kind.

Wu et al., "Fine-Grained Human Feedback Gives Better Rewards for Language Model Training" (NeurIPS
2023): one model per error kind — relevance (R1, sub-sentences), factuality (R2, sentences),
completeness (R3, the response) — whose verdicts become dense rewards, ``+w`` for a segment without
an error and ``−w`` for one with, on the segment's last token (``{kind: fine_grained}``).

Stages: responses with labeled segments (:mod:`rlxf.data.fine_grained`) -> held-out split by question
-> one example per segment (the response up to the segment's end, the segment marked) -> binary
cross-entropy on P[no error] -> held-out accuracy, precision, recall and F1 of each class, and the
always-error / always-no-error baselines, as the paper's appendix reports them.

Where rlxf departs from the authors' code: their model (Longformer) reads the whole response once and
classifies a separator token placed before each segment; rlxf's scalar-head model reads each segment
with the text before it, marked, once per segment — the same verdict a causal backbone can give,
since it cannot see past a separator. Their R1 reads no passages; rlxf gives every kind the policy's
prompt (cut from its start to ``data.max_prompt_length``, which keeps the question).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlxf.config import Checked, DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data.fine_grained import CONTEXT_CHARS, KINDS, LEVELS, read_segmented, segment_examples
from rlxf.eval.reward_accuracy import error_detection
from rlxf.recipes.classifier_loop import train_binary_classifier
from rlxf.recipes.common import load_splits, say


@dataclass
class FineGrainedRMConfig(Checked):
    output_dir: str = "runs/fgrm"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    kind: str = "relevance"
    """relevance (sub-sentences: irrelevant, redundant, incoherent), factuality (sentences: wrong or
    unverifiable facts) or completeness (the response: missing major information)."""
    error_tags: list[str] = field(default_factory=list)
    """The error types (or the feedback app's span tags) this kind learns; default: the qa-feedback
    types of the kind."""
    passages: int = 0
    """qa-feedback: the passages each prompt holds, first ones first (0: all); the policy's prompts
    should hold the same (`rlxf.data.fine_grained.qa_prompt`)."""
    context_chars: int = CONTEXT_CHARS
    """Characters of the response before a segment that its example shows (the segment itself is
    always whole: an example the input limit would cut is refused)."""
    model: ModelSection = field(default_factory=lambda: ModelSection(name="minilm-l6-v2"))
    """Backbone; a scalar head (the logit of P[no error]) is added."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512, max_prompt_length=256))
    """The qa-feedback file (../shared/data/qa_feedback_dev_feedback.json) or the app's spans.jsonl."""
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=3, batch_size=16, lr=5e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""

    def check(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.context_chars < 0:
            raise ValueError(f"context_chars must be >= 0, got {self.context_chars}")
        if self.passages < 0:
            raise ValueError(f"passages must be >= 0 (0: all), got {self.passages}")


def train_fine_grained_rm(config: FineGrainedRMConfig) -> dict:
    def read(path, format, on_bad_row):  # noqa: A002 (load_splits passes the data section's format)
        return read_segmented(
            path, config.kind, tuple(config.error_tags), passages=config.passages, on_bad_row=on_bad_row
        )

    responses, held_responses, data_summary = load_splits(config.data, read, "responses")
    records = segment_examples(responses, config.context_chars)
    held_records = segment_examples(held_responses, config.context_chars)
    data_summary.update(train_segments=len(records), held_out_segments=len(held_records))
    name = f"{config.kind} reward model"
    trained = train_binary_classifier(config, records, held_records, error_detection, name=name, whole_completions=True)
    results = {"held_out": trained.held_out, "data": data_summary, "truncation": trained.truncation}
    held = trained.held_out
    say(
        f"{name}: held-out accuracy {held['accuracy']:.3f} on {held['responses']} segments (always-error "
        f"{held['all_error_accuracy']:.3f}); error F1 {held['error_f1']:.3f}, no-error F1 {held['no_error_f1']:.3f}"
    )
    trained.save(
        config,
        results,
        title=f"Fine-grained {name}",
        recipe="fgrm",
        kind="fine_grained",
        error_kind=config.kind,
        level=LEVELS[config.kind],
        context_chars=config.context_chars,
    )
    return results

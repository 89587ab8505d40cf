"""Principle-tagged binary judgements: does this response satisfy this principle, stated in words?

Wang et al., "RLBFF: Binary Flexible Feedback to bridge between Human Feedback & Verifiable Rewards"
(2025): feedback becomes (prompt, response, principle, yes/no); a reward model reads the principle
with the response, so the principles can be chosen when it is used. rlxf derives the judgements from
the feedback it has:

- the feedback app's ``ratings.jsonl``: each rated aspect is a principle ("The response is
  {aspect}."), satisfied at a score of 4 or 5 of 5, not at 1 or 2 (a 3 says neither, and is left out);
- the qa-feedback file: three principles from the error kinds marked in ``prediction 1`` (no irrelevant,
  redundant or incoherent text; no wrong or unverifiable fact; no missing major information);
- a file of its own: ``{"prompt", "completion", "principle", "label"}`` rows (label true/false or 1/0).
"""

from __future__ import annotations

from pathlib import Path

from rlxf.data.cells import Cell
from rlxf.data.errors import BadRows
from rlxf.data.fine_grained import ERROR_TAGS, MIN_SPAN_WORDS, missing_types, qa_fields
from rlxf.data.formats import OnBadRow, read_records
from rlxf.data.records import Labeled, Message

QA_PRINCIPLES = {
    "relevance": "The response contains no irrelevant, redundant or incoherent text.",
    "factuality": "Every fact in the response is supported by the passages.",
    "completeness": "The response gives the answer and all the major information the question asks for.",
}
SATISFIED, UNSATISFIED = 4, 2  # rating scores at or above / at or below


def with_principle(prompt: list[Message], principle: str) -> list[Message]:
    """The prompt a principle-conditioned model reads: the principle as a turn of its own after the
    prompt (so that the judgements of one question under several principles share its first turn,
    and a held-out split keeps them together)."""
    return [*prompt, {"role": "user", "content": f"Principle: {principle}"}]


def principle_of(prompt: list[Message]) -> str:
    """The principle :func:`with_principle` put into ``prompt``."""
    return prompt[-1]["content"].removeprefix("Principle: ")


def aspect_principle(aspect: str) -> str:
    return f"The response is {aspect.replace('_', ' ').replace('-', ' ')}."


def _rating_rows(cell: Cell) -> list[Labeled]:
    scores = cell.require("scores")
    if not isinstance(scores, dict) or not scores:
        raise cell.error("scores", "expected an object of aspect scores (1-5)")
    prompt, completion, rows = cell.prompt("prompt"), cell.completion("completion"), []
    for aspect, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 1 <= score <= 5:
            raise cell.error(f"scores.{aspect}", f"expected a score from 1 to 5, got {score!r}")
        if score >= SATISFIED or score <= UNSATISFIED:
            label = float(score >= SATISFIED)
            rows.append(
                Labeled(
                    with_principle(prompt, aspect_principle(aspect)),
                    completion,
                    label,
                    weight=cell.weight(),
                    source=cell.source,
                )
            )
    return rows


def _qa_rows(cell: Cell, passages: int) -> list[Labeled]:
    prompt, response, feedback = qa_fields(cell, passages)
    long_errors = {
        error["error type"]
        for error in feedback.get("errors", [])
        if error["error type"] not in ERROR_TAGS["relevance"] or _words(response, error) >= MIN_SPAN_WORDS
    }  # as `rlxf fgrm`: an irrelevant, redundant or incoherent span of under 5 words does not count
    found = long_errors | missing_types(feedback)
    return [
        Labeled(
            with_principle(prompt, principle), response, float(not found & set(ERROR_TAGS[kind])), source=cell.source
        )
        for kind, principle in QA_PRINCIPLES.items()
    ]


def _words(response: str, error: dict) -> int:
    start, end = error.get("start"), error.get("end")
    return len(response[start:end].split()) if isinstance(start, int) and isinstance(end, int) else 0


def _own_row(cell: Cell) -> list[Labeled]:
    label = cell.require("label")
    if isinstance(label, str) and label.strip().lower() in ("true", "false", "1", "0"):
        label = label.strip().lower() in ("true", "1")
    if label not in (0, 1) or isinstance(label, float) and label not in (0.0, 1.0):
        raise cell.error("label", f"expected true/false or 1/0, got {label!r}")
    prompt = with_principle(cell.prompt("prompt"), cell.text("principle"))
    return [Labeled(prompt, cell.completion("completion"), float(label), weight=cell.weight(), source=cell.source)]


def read_principle_judgements(
    path: str | Path, *, passages: int = 0, on_bad_row: OnBadRow = "error"
) -> tuple[list[Labeled], BadRows]:
    """Principle-conditioned examples (the principle inside the prompt) from any of the three layouts,
    told apart by each row's fields. Returns the examples of all rows, and the rows skipped."""

    def parse(cell: Cell) -> list[Labeled]:
        if "scores" in cell.row:
            return _rating_rows(cell)
        if "prediction 1" in cell.row:
            return _qa_rows(cell, passages)
        return _own_row(cell)

    groups, bad = read_records(path, parse, on_bad_row)
    return [example for group in groups for example in group], bad

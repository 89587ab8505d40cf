"""What an answer to each question type looks like, checked against what was shown.

Positions in an answer (``"A"``/``"B"``, ranking orders, span candidates) refer to the order
the labeler saw; the assignment's ``shown_order`` maps them back to candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PAIRWISE_CHOICES = ("A", "B", "tie", "both_bad")
REACTIONS = {"love": 1.0, "like": 1.0, "dislike": 0.0}
"""Binary reactions and the label each gives (love and like are both desirable)."""
RATING_SCALE = (1, 5)
MAX_TEXT = 4000
QUESTIONS_HELP = (
    "pairwise: A / B / tie / both bad; ranking: k responses best first; reaction: love / like / dislike; "
    "rating: 1-5 per aspect; spans: tagged error spans; verbal: a written instruction"
)


class AnswerError(ValueError):
    """An answer that does not fit its question; the message names the field."""


def _text(payload: dict, field: str, *, required: bool) -> str:
    value = payload.get(field, "")
    if not isinstance(value, str):
        raise AnswerError(f"{field}: expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise AnswerError(f"{field}: must not be empty")
    if len(value) > MAX_TEXT:
        raise AnswerError(f"{field}: at most {MAX_TEXT} characters, got {len(value)}")
    return value


def _pairwise(payload: dict, texts: list[str], project) -> dict:
    if len(texts) != 2:
        raise AnswerError(f"a pairwise question needs 2 responses, this item has {len(texts)}")
    choice = payload.get("choice")
    if choice not in PAIRWISE_CHOICES:
        raise AnswerError(f"choice: expected one of {', '.join(PAIRWISE_CHOICES)}, got {choice!r}")
    return {"choice": choice, "reason": _text(payload, "reason", required=False)}


def _ranking(payload: dict, texts: list[str], project) -> dict:
    order = payload.get("order")
    if not isinstance(order, list) or sorted(order) != list(range(len(texts))):
        raise AnswerError(f"order: expected every position 0..{len(texts) - 1} once, best first, got {order!r}")
    return {"order": order}


def _reaction(payload: dict, texts: list[str], project) -> dict:
    reaction = payload.get("reaction")
    if reaction not in REACTIONS:
        raise AnswerError(f"reaction: expected one of {', '.join(REACTIONS)}, got {reaction!r}")
    return {"reaction": reaction}


def _rating(payload: dict, texts: list[str], project) -> dict:
    scores = payload.get("scores")
    low, high = RATING_SCALE
    if not isinstance(scores, dict) or set(scores) != set(project.aspects):
        raise AnswerError(f"scores: expected a score for each of {project.aspects}, got {scores!r}")
    for aspect, score in scores.items():
        if not isinstance(score, int) or isinstance(score, bool) or not low <= score <= high:
            raise AnswerError(f"scores.{aspect}: expected a whole number {low}..{high}, got {score!r}")
    return {"scores": scores}


def _spans(payload: dict, texts: list[str], project) -> dict:
    spans = payload.get("spans")
    if not isinstance(spans, list) or len(spans) > 100:
        raise AnswerError("spans: expected a list of at most 100 spans")
    checked = []
    for i, span in enumerate(spans):
        if not isinstance(span, dict):
            raise AnswerError(f"spans[{i}]: expected an object")
        candidate, start, end, tag = (span.get(k) for k in ("candidate", "start", "end", "tag"))
        if not isinstance(candidate, int) or not 0 <= candidate < len(texts):
            raise AnswerError(f"spans[{i}].candidate: expected a position 0..{len(texts) - 1}, got {candidate!r}")
        length = len(texts[candidate])
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length):
            raise AnswerError(f"spans[{i}]: expected 0 <= start < end <= {length}, got {start!r}..{end!r}")
        if tag not in project.span_tags:
            raise AnswerError(f"spans[{i}].tag: expected one of {project.span_tags}, got {tag!r}")
        checked.append({"candidate": candidate, "start": start, "end": end, "tag": tag})
    return {"spans": checked}


def _verbal(payload: dict, texts: list[str], project) -> dict:
    return {"text": _text(payload, "text", required=True)}


VALIDATORS: dict[str, Callable[[dict, list[str], Any], dict]] = {
    "pairwise": _pairwise,
    "ranking": _ranking,
    "reaction": _reaction,
    "rating": _rating,
    "spans": _spans,
    "verbal": _verbal,
}


def checked_answer(question: str, payload: Any, shown_texts: list[str], project) -> dict:
    """``payload`` reduced to the fields its question defines, or AnswerError naming the field."""
    if not isinstance(payload, dict):
        raise AnswerError("answer: expected an object")
    return VALIDATORS[question](payload, shown_texts, project)


def candidates_needed(question: str) -> tuple[int, int]:
    """How many responses an item of this question type has (at least, at most)."""
    return {"pairwise": (2, 2), "ranking": (2, 9), "reaction": (1, 1), "rating": (1, 1)}.get(question, (1, 9))

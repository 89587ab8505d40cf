"""Fine-grained feedback: a response cut into segments, each labeled with or without an error.

Wu et al., "Fine-Grained Human Feedback Gives Better Rewards for Language Model Training" (NeurIPS
2023), as their code (allenai/FineGrainedRLHF, tasks/qa_feedback/reward_modeling) builds its data:

- **relevance** (R1): sub-sentences; an error is an irrelevant, redundant or incoherent span of at
  least 5 words; factual errors count as no error here.
- **factuality** (R2): sentences; an error is an inconsistent ("Wrong-Grounding") or unverifiable
  fact; a sentence with only other errors is left out of training (its label is None).
- **completeness** (R3): the whole response; rlxf labels it incomplete where the annotator marked
  missing major information (Missing-Answer, Missing-Major-Auxiliary). The authors train R3 on
  preferences between predictions derived from how much of the corrected answer's information each
  covers; rlxf learns from the people's own marks instead.

A segment has an error when any character of any of its words lies inside an error span (overlap,
as theirs). Sentences are cut after ``. ! ?`` (and closing quotes or brackets) followed by space or a
line break, where theirs uses spaCy; sub-sentences follow their rule exactly: within a sentence, cut
after a word ending in ``, ; ! ?`` when at least 6 words follow, a short piece (under 5 words)
joining the one before it.

Data: the qa-feedback file (``question``, ``passages``, ``prediction 1``, ``feedback``), or the
feedback app's ``spans.jsonl`` (``prompt``, ``completion``, ``spans`` of ``{start, end, tag}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rlxf.data.cells import Cell
from rlxf.data.errors import BadRows
from rlxf.data.formats import OnBadRow, read_records
from rlxf.data.records import Labeled, Message

KINDS = ("relevance", "factuality", "completeness")
LEVELS = {"relevance": "subsentence", "factuality": "sentence", "completeness": "response"}
ERROR_TAGS = {
    "relevance": ("Irrelevant", "Redundant", "Incoherent"),
    "factuality": ("Wrong-Grounding", "Unverifiable"),
    "completeness": ("Missing-Answer", "Missing-Major-Auxiliary"),
}
"""The qa-feedback error types each kind learns (the app's span tags are named by ``error_tags``)."""
MIN_SUBSENTENCE_WORDS = 5
MIN_SPAN_WORDS = 5  # a non-factual span shorter than this is dropped (the authors' App. D)
CONTEXT_CHARS = 600  # the text before a segment that its classifier reads
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


@dataclass
class SegmentedResponse:
    """One response, its segments as character ranges covering it, and each segment's label:
    1 (no error), 0 (an error), or None (left out of training)."""

    prompt: list[Message]
    response: str
    segments: list[tuple[int, int]]
    labels: list[float | None]
    source: str = ""
    weight: float = 1.0
    """The row's ``weight`` (e.g. the labeler's reliability from the app's export): each segment's."""

    @property
    def group_key(self) -> str:
        """The first user turn: the segments of one question stay on one side of the split."""
        return next((m["content"] for m in self.prompt if m["role"] == "user"), "")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Contiguous (start, end) ranges covering ``text``, one per sentence."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    bounds = [0, *(e for e in ends if 0 < e < len(text.rstrip())), len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()] or [(0, len(text))]


def subsentence_spans(text: str) -> list[tuple[int, int]]:
    """Each sentence cut further at ``, ; ! ?`` as the authors' ``get_subsentence_starts``."""
    pieces = []
    for start, end in sentence_spans(text):
        words = [m.start() + start for m in re.finditer(r"\S+", text[start:end])]
        firsts = _subsentence_starts([text[w:end].split(None, 1)[0] for w in words])
        cuts = [start, *(words[i] for i in firsts[1:]), end]
        pieces += list(zip(cuts, cuts[1:]))
    return pieces


def _subsentence_starts(words: list[str]) -> list[int]:
    starts = [0]
    for i in range(1, len(words)):
        if words[i - 1][-1] in ",;!?" and i + MIN_SUBSENTENCE_WORDS < len(words):
            if i - starts[-1] >= MIN_SUBSENTENCE_WORDS:
                starts.append(i)
            elif len(starts) > 1:  # a short piece joins the one before it
                starts[-1] = i
    return starts


def segments_of(text: str, level: str) -> list[tuple[int, int]]:
    if level == "response":
        return [(0, len(text))]
    return sentence_spans(text) if level == "sentence" else subsentence_spans(text)


def segment_labels(
    text: str, segments: list[tuple[int, int]], errors: list[tuple[int, int]], others: list[tuple[int, int]], kind: str
) -> list[float | None]:
    """1 or 0 for each segment: 0 where an ``errors`` span touches one of its words. For factuality,
    a segment touched only by ``others`` (errors of another kind) is None. Non-factual spans (the
    relevance errors, the factuality others) of fewer than 5 words do not count."""
    if kind == "relevance":
        errors = _long(text, errors)
    elif kind == "factuality":
        others = _long(text, others)
    labels: list[float | None] = []
    for start, end in segments:
        words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
        if any(_touches(words, span) for span in errors):
            labels.append(0.0)
        elif kind == "factuality" and any(_touches(words, span) for span in others):
            labels.append(None)
        else:
            labels.append(1.0)
    return labels


def _long(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in spans if len(text[a:b].split()) >= MIN_SPAN_WORDS]


def _touches(words: list[tuple[int, int]], span: tuple[int, int]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in words)


def qa_prompt(question: str, passages: list[list[str]]) -> str:
    """The policy's and the reward models' prompt for a qa-feedback question: its passages (each
    ``[title, sentence, ...]``), then the question (last, so that a prompt cut from the start keeps it)."""
    context = "\n".join(f"{passage[0]}: {' '.join(passage[1:])}" for passage in passages)
    return f"Passages:\n{context}\n\nAnswer this question from the passages: {question}"


def qa_fields(cell: Cell, passages_kept: int) -> tuple[list[Message], str, dict]:
    """A qa-feedback row's prompt (its passages and question), ``prediction 1`` and feedback, each
    checked: a malformed one names its field."""
    question, response = cell.text("question"), cell.text("prediction 1")
    passages = cell.require("passages")
    if not isinstance(passages, list) or not all(
        isinstance(p, list) and p and all(isinstance(t, str) for t in p) for p in passages
    ):
        raise cell.error("passages", "expected a list of [title, sentence, ...] lists of strings")
    feedback = cell.require("feedback")
    if not isinstance(feedback, dict):
        raise cell.error("feedback", "expected an object with errors and missing-info")
    for name in ("errors", "missing-info"):
        marks = feedback.get(name, [])
        if not isinstance(marks, list):
            raise cell.error(f"feedback.{name}", "expected a list")
        for index, mark in enumerate(marks):
            if not isinstance(mark, dict) or not isinstance(mark.get("error type"), str):
                raise cell.error(f"feedback.{name}[{index}]", "expected an object with an 'error type'")
    prompt = [{"role": "user", "content": qa_prompt(question, passages[: passages_kept or None])}]
    return prompt, response, feedback


def missing_types(feedback: dict) -> set[str]:
    return {mark["error type"] for mark in feedback.get("missing-info", [])}


def _qa_feedback_row(cell: Cell, kind: str, error_tags: tuple[str, ...], passages_kept: int) -> SegmentedResponse:
    prompt, response, feedback = qa_fields(cell, passages_kept)
    if kind == "completeness":
        label = 0.0 if missing_types(feedback) & set(error_tags) else 1.0
        return SegmentedResponse(prompt, response, [(0, len(response))], [label], cell.source)
    errors, others = [], []
    for index, error in enumerate(feedback.get("errors", [])):
        span = _span(cell, error, f"feedback.errors[{index}]", len(response), "error type")
        (errors if error["error type"] in error_tags else others).append(span)
    segments = segments_of(response, LEVELS[kind])
    return SegmentedResponse(
        prompt, response, segments, segment_labels(response, segments, errors, others, kind), cell.source
    )


def _span(cell: Cell, span, field: str, length: int, tag_field: str) -> tuple[int, int]:
    if not isinstance(span, dict) or not isinstance(span.get(tag_field), str):
        raise cell.error(field, f"expected an object with start, end and {tag_field!r}")
    start, end = span.get("start"), span.get("end")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length):
        raise cell.error(field, f"expected 0 <= start < end <= {length} (the response's length), got {start}, {end}")
    return start, end


def _spans_row(cell: Cell, kind: str, error_tags: tuple[str, ...]) -> SegmentedResponse:
    """A row of the feedback app's spans.jsonl: its ``tag`` names the error kind, among the project's
    own span tags, which ``error_tags`` must name (the qa-feedback types would match none)."""
    if not error_tags:
        raise cell.error("spans", "name this kind's tags among the project's span tags: error_tags=[tag, ...]")
    response = cell.text("completion")
    spans = cell.require("spans")
    if not isinstance(spans, list):
        raise cell.error("spans", "expected a list of {start, end, tag}")
    errors, others = [], []
    for index, span in enumerate(spans):
        bounds = _span(cell, span, f"spans[{index}]", len(response), "tag")
        (errors if span["tag"] in error_tags else others).append(bounds)
    if kind == "completeness":
        label = 0.0 if errors else 1.0
        return SegmentedResponse(
            cell.prompt("prompt"), response, [(0, len(response))], [label], cell.source, cell.weight()
        )
    segments = segments_of(response, LEVELS[kind])
    labels = segment_labels(response, segments, errors, others, kind)
    return SegmentedResponse(cell.prompt("prompt"), response, segments, labels, cell.source, cell.weight())


def read_segmented(
    path: str | Path, kind: str, error_tags: tuple[str, ...] = (), *, passages: int = 0, on_bad_row: OnBadRow = "error"
) -> tuple[list[SegmentedResponse], BadRows]:
    """Responses with segment labels for ``kind`` from a qa-feedback file or the app's spans.jsonl
    (told apart by each row's fields); ``error_tags`` defaults to the qa-feedback types of ``kind``
    (span rows need it: it names which of a project's tags are this kind's errors);
    a qa-feedback prompt holds the first ``passages`` passages (0: all)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def parse(cell: Cell) -> SegmentedResponse:
        if "spans" in cell.row:
            return _spans_row(cell, kind, tuple(error_tags))
        return _qa_feedback_row(cell, kind, tuple(error_tags) or ERROR_TAGS[kind], passages)

    return read_records(path, parse, on_bad_row)


def marked(response: str, segment: tuple[int, int], context_chars: int = CONTEXT_CHARS) -> str:
    """What a segment classifier reads: the segment in double brackets after at most
    ``context_chars`` of the text before it (the classifier's input keeps its start, so the segment
    must come early enough to be kept)."""
    start, end = segment
    before = response[max(0, start - context_chars) : start]
    return f"{'…' if start > context_chars else ''}{before}[[{response[start:end]}]]"


def segment_examples(responses: list[SegmentedResponse], context_chars: int = CONTEXT_CHARS) -> list[Labeled]:
    """One labeled example per segment with a label: (prompt, marked text, 1 no error / 0 error)."""
    return [
        Labeled(r.prompt, marked(r.response, segment, context_chars), label, weight=r.weight, source=r.source)
        for r in responses
        for segment, label in zip(r.segments, r.labels)
        if label is not None
    ]

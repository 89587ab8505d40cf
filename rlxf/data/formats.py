"""Turn rows of the formats users bring into records.

Preference formats:
  ``trl``     {"prompt", "chosen", "rejected"}: strings (standard) or message lists
              (conversational); without "prompt", chosen/rejected conversations share
              a prompt prefix. Optional rlxf fields: tie, margin, aspects, annotator, weight.
  ``hh``      Anthropic HH-RLHF: {"chosen", "rejected"} dialogue strings
              "\\n\\nHuman: ...\\n\\nAssistant: ..." sharing all but the last Assistant turn.
  ``autoj``   Auto-J: {"prompt", "response 1", "response 2", "label"}, label 0/1/2 (2 = tie).
  ``webgpt``  WebGPT comparisons (DSP layout): {"text": [a, b], "score": [s_a, s_b]}.
Labeled format: ``unpaired`` {"prompt", "completion", "label"} (TRL's KTO layout).
Response sets (labeling items): {"prompt", "responses": [text or {"text", "model"}, ...]}, or any
preference format (its two completions).
Prompt formats: {"prompt"}, {"messages"}, {"question"} (GSM8K), or any preference format.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Literal

from rlxf.data.errors import BadRows, DataError
from rlxf.data.readers import Row, iter_rows
from rlxf.data.records import Labeled, Message, Preference, Prompt, ResponseSet

OnBadRow = Literal["error", "skip"]
_ROLES = {"system", "user", "assistant", "tool"}


class _Cell:
    """Field access on one row that raises DataError naming file, line and field."""

    def __init__(self, path: str, location: str, row: Row):
        self.path, self.location, self.row = path, location, row

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(self.path, self.location, field, message)

    @property
    def source(self) -> str:
        return f"{self.path}, {self.location}"

    def require(self, field: str) -> Any:
        if field not in self.row or self.row[field] is None:
            raise self.error(field, f"missing (row has {sorted(self.row)})")
        return self.row[field]

    def text(self, field: str) -> str:
        value = self.require(field)
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {type(value).__name__}")
        return value

    def prompt(self, field: str) -> list[Message]:
        """A prompt: a non-empty string, or messages ending with a user (or tool) turn."""
        messages = self.messages(field)
        if messages[-1]["role"] not in ("user", "tool"):
            raise self.error(field, f"expected the prompt to end with a user turn, not {messages[-1]['role']!r}")
        if not any(m["content"].strip() for m in messages):
            raise self.error(field, "empty prompt")
        return messages

    def messages(self, field: str, value: Any = None) -> list[Message]:
        value = self.require(field) if value is None else value
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        if not isinstance(value, list) or not value:
            raise self.error(field, "expected a string or a non-empty list of {role, content} messages")
        for index, message in enumerate(value):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise self.error(f"{field}[{index}]", f"expected a message with role in {sorted(_ROLES)}")
            if not isinstance(message.get("content"), str):
                raise self.error(f"{field}[{index}].content", "expected a string")
        return [{"role": m["role"], "content": m["content"]} for m in value]

    def completion(self, field: str) -> str:
        """A completion given as a string or as a one-message assistant list."""
        value = self.require(field)
        if isinstance(value, str):
            return value
        messages = self.messages(field, value)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise self.error(field, "expected a string or a list holding one assistant message")
        return messages[0]["content"]

    def number(self, field: str, default: float | None = None) -> float | None:
        """An optional finite number (missing or empty gives ``default``)."""
        value = self.row.get(field, default)
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise self.error(field, f"expected a number, got {str(value)[:50]!r}") from None
        if not math.isfinite(number):
            raise self.error(field, f"expected a finite number, got {value!r}")
        return number

    def required_number(self, field: str) -> float:
        self.require(field)
        value = self.number(field)
        if value is None:
            raise self.error(field, "missing (empty)")
        return value

    def weight(self) -> float:
        """The optional per-example ``weight``: a positive number, 1 when missing."""
        value = self.number("weight", 1.0)
        if value <= 0:
            raise self.error("weight", f"expected a positive number, got {value!r}")
        return value

    def flag(self, field: str) -> bool:
        value = self.row.get(field, False)
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in {"", "0", "1", "true", "false"}:
                raise self.error(field, f"expected true/false, got {value!r}")
            return value in {"1", "true"}
        if value not in (None, True, False, 0, 1):
            raise self.error(field, f"expected true/false, got {value!r}")
        return bool(value)


# ---- dialogues -------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_WEBGPT_TURN = re.compile(r"(?:^|\n\n)## (Human|Assistant):\n")
_SPEAKERS = {"Human": "user", "Assistant": "assistant"}


def parse_dialogue(text: str, pattern: re.Pattern = _HH_TURN) -> list[Message]:
    """Split ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` into chat messages."""
    if pattern is _HH_TURN and not text.startswith("\n\n"):
        text = "\n\n" + text
    parts = pattern.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("expected a dialogue starting with a Human turn")
    return [
        {"role": _SPEAKERS[speaker], "content": content.strip()} for speaker, content in zip(parts[1::2], parts[2::2])
    ]


def _split_last_reply(cell: _Cell, field: str, text: str, pattern: re.Pattern) -> tuple[list[Message], str]:
    try:
        turns = parse_dialogue(text, pattern)
    except ValueError as error:
        raise cell.error(field, str(error)) from None
    if turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise cell.error(field, "expected the dialogue to end with an Assistant turn")
    return turns[:-1], turns[-1]["content"]


# ---- preference adapters ---------------------------------------------------------------


def _extras(cell: _Cell) -> dict[str, Any]:
    aspects = cell.row.get("aspects") or {}
    if not isinstance(aspects, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and -1 <= v <= 1 for v in aspects.values()
    ):
        raise cell.error("aspects", "expected an object of aspect name -> number in [-1, 1]")
    annotator = cell.row.get("annotator")
    return {
        "tie": cell.flag("tie"),
        "margin": cell.number("margin"),
        "aspects": {str(k): float(v) for k, v in aspects.items()},
        "annotator": None if annotator is None else str(annotator),
        "weight": cell.weight(),
    }


def _checked_pair(cell: _Cell, prompt: list[Message], chosen: str, rejected: str, **extras) -> Preference:
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise cell.error("prompt", "expected a prompt that ends with a user turn")
    if chosen == rejected and not extras.get("tie"):
        raise cell.error("rejected", "identical to 'chosen' (no preference to learn from)")
    return Preference(prompt, chosen, rejected, source=cell.source, **extras)


def _from_trl(cell: _Cell) -> Preference:
    if "prompt" not in cell.row:
        return _from_trl_implicit(cell)
    return _checked_pair(
        cell, cell.prompt("prompt"), cell.completion("chosen"), cell.completion("rejected"), **_extras(cell)
    )


def _from_trl_implicit(cell: _Cell) -> Preference:
    chosen, rejected = cell.messages("chosen"), cell.messages("rejected")
    if chosen[:-1] != rejected[:-1]:
        raise cell.error("rejected", "conversation differs from 'chosen' before the last message")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise cell.error("chosen", "expected the conversation to end with an assistant message")
    return _checked_pair(cell, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], **_extras(cell))


def _from_hh(cell: _Cell) -> Preference:
    prompt, chosen = _split_last_reply(cell, "chosen", cell.text("chosen"), _HH_TURN)
    rejected_prompt, rejected = _split_last_reply(cell, "rejected", cell.text("rejected"), _HH_TURN)
    if rejected_prompt != prompt:
        raise cell.error("rejected", "dialogue differs from 'chosen' before the last Assistant turn")
    return _checked_pair(cell, prompt, chosen, rejected, **_extras(cell))


def _from_autoj(cell: _Cell) -> Preference:
    label = cell.require("label")
    if isinstance(label, bool) or label not in (0, 1, 2):
        raise cell.error("label", f"expected 0 (response 1 better), 1 (response 2 better) or 2 (tie), got {label!r}")
    first, second = cell.text("response 1"), cell.text("response 2")
    chosen, rejected = (second, first) if label == 1 else (first, second)
    return _checked_pair(cell, cell.prompt("prompt"), chosen, rejected, tie=label == 2, annotator="auto-j-human")


def _from_webgpt(cell: _Cell) -> Preference:
    texts, scores = cell.require("text"), cell.require("score")
    if not (isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)):
        raise cell.error("text", "expected a list of two dialogue strings")
    if not (
        isinstance(scores, list)
        and len(scores) == 2
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores)
    ):
        raise cell.error("score", "expected a list of two finite numbers")
    prompt_a, reply_a = _split_last_reply(cell, "text", texts[0], _WEBGPT_TURN)
    prompt_b, reply_b = _split_last_reply(cell, "text", texts[1], _WEBGPT_TURN)
    if prompt_a != prompt_b:
        raise cell.error("text", "the two dialogues have different questions")
    first_better = scores[0] >= scores[1]
    chosen, rejected = (reply_a, reply_b) if first_better else (reply_b, reply_a)
    return _checked_pair(
        cell, prompt_a, chosen, rejected, tie=scores[0] == scores[1], margin=abs(float(scores[0]) - float(scores[1]))
    )


PREFERENCE_FORMATS: dict[str, Callable[[_Cell], Preference]] = {
    "trl": _from_trl,
    "hh": _from_hh,
    "autoj": _from_autoj,
    "webgpt": _from_webgpt,
}


def detect_preference_format(row: Row) -> str:
    keys = set(row)
    if {"response 1", "response 2", "label"} <= keys:
        return "autoj"
    if {"text", "score"} <= keys:
        return "webgpt"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and isinstance(row["chosen"], str) and "Human:" in row["chosen"]:
            return "hh"
        return "trl"
    raise ValueError(
        f"cannot tell the preference format from keys {sorted(keys)}; expected prompt/chosen/rejected (trl), "
        "chosen/rejected dialogues (hh), prompt/'response 1'/'response 2'/label (autoj) or text/score (webgpt)"
    )


# ---- labeled and prompt adapters -------------------------------------------------------


_BINARY_LABELS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _binary_label(cell: _Cell) -> float:
    """KTO's desirable/undesirable label: true/false or 1/0 (as JSON values or text)."""
    label = cell.require("label")
    if isinstance(label, (bool, int, float)) and label in (0, 1):
        return float(label)
    if isinstance(label, str) and label.strip().lower() in _BINARY_LABELS:
        return _BINARY_LABELS[label.strip().lower()]
    raise cell.error("label", f"expected true/false or 1/0, got {label!r}")


def _from_unpaired(cell: _Cell) -> Labeled:
    label = _binary_label(cell)
    annotator = cell.row.get("annotator")
    return Labeled(
        cell.prompt("prompt"),
        cell.completion("completion"),
        float(label),
        annotator=None if annotator is None else str(annotator),
        weight=cell.weight(),
        source=cell.source,
    )


def _from_prompt_row(cell: _Cell) -> Prompt:
    if "instruction" in cell.row and cell.row.get("input"):  # Alpaca layout
        text = f"{cell.text('instruction')}\n\n{cell.text('input')}"
        return Prompt([{"role": "user", "content": text}], source=cell.source)
    is_pair = "chosen" in cell.row and "rejected" in cell.row
    for field in ("prompt", "messages", "question", "instruction"):
        if field in cell.row and not is_pair:
            messages = cell.messages(field)
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            if not messages:
                raise cell.error(field, "expected at least one non-assistant message")
            context = {key: str(cell.row[key]) for key in ("answer", "reference") if cell.row.get(key) is not None}
            return Prompt(messages, source=cell.source, context=context)
    # a preference row: its preferred response is the reference a pairwise judge compares against
    try:
        layout = detect_preference_format(cell.row)
    except ValueError as error:
        raise cell.error("prompt", f"missing, and the row is no preference pair either ({error})") from None
    pair = _parse_preference(cell, layout)
    return Prompt(pair.prompt, source=cell.source, context={"reference": pair.chosen})


def _parse_preference(cell: _Cell, format_name: str) -> Preference:
    return PREFERENCE_FORMATS[format_name](cell)


# ---- reading files -------------------------------------------------------------------


def _read(path: str | Path, parse: Callable[[_Cell], Any], on_bad_row: OnBadRow) -> tuple[list, BadRows]:
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    records, bad = [], BadRows()
    for location, row in iter_rows(path, bad if on_bad_row == "skip" else None):
        cell = _Cell(str(path), location, row)
        try:
            records.append(parse(cell))
        except DataError as error:
            if on_bad_row == "error":
                raise
            bad.errors.append(error)
    if not records and bad:
        raise DataError(str(path), "file", None, f"no usable rows: {bad.summary()}")
    return records, bad


def read_preferences(
    path: str | Path, *, format: str = "auto", on_bad_row: OnBadRow = "error"
) -> tuple[list[Preference], BadRows]:
    """Read pairwise preferences from any supported file and format.

    ``format="auto"`` decides from the first row's keys. Malformed rows raise
    :class:`DataError`, or with ``on_bad_row="skip"`` are counted in the returned ``BadRows``.
    """
    if format != "auto" and format not in PREFERENCE_FORMATS:
        raise ValueError(f"{format!r} is not a preference format; known: auto, {', '.join(PREFERENCE_FORMATS)}")
    chosen_format: list[str] = [] if format == "auto" else [format]

    def parse(cell: _Cell) -> Preference:
        if not chosen_format:
            try:
                chosen_format.append(detect_preference_format(cell.row))
            except ValueError as error:
                raise cell.error(None, str(error)) from None
        return _parse_preference(cell, chosen_format[0])

    return _read(path, parse, on_bad_row)


def read_labeled(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[list[Labeled], BadRows]:
    """Read single completions with binary labels ({prompt, completion, label: true/false or 1/0})."""
    return _read(path, _from_unpaired, on_bad_row)


def read_prompts(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[list[Prompt], BadRows]:
    """Read prompts from a prompt file or from the prompts of any preference file."""
    return _read(path, _from_prompt_row, on_bad_row)


def _from_demonstration(cell: _Cell, preference_format: list[str]) -> Labeled | None:
    """A (prompt, completion) to imitate, from whatever the row holds."""
    if "completion" in cell.row:
        labeled = (
            _from_unpaired(cell)
            if "label" in cell.row
            else Labeled(cell.prompt("prompt"), cell.completion("completion"), 1.0, source=cell.source)
        )
        return labeled if labeled.desirable else None
    if "messages" in cell.row:
        messages = cell.messages("messages")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise cell.error("messages", "expected a conversation ending with an assistant message")
        return Labeled(messages[:-1], messages[-1]["content"], 1.0, source=cell.source)
    if not preference_format:
        try:
            preference_format.append(detect_preference_format(cell.row))
        except ValueError as error:
            raise cell.error(None, str(error)) from None
    pair = _parse_preference(cell, preference_format[0])
    return (
        None
        if pair.tie
        else Labeled(pair.prompt, pair.chosen, 1.0, annotator=pair.annotator, weight=pair.weight, source=cell.source)
    )


def read_demonstrations(
    path: str | Path, *, format: str = "auto", on_bad_row: OnBadRow = "error"
) -> tuple[list[Labeled], BadRows]:
    """Completions to imitate: {prompt, completion[, label > 0]}, {messages}, or the chosen side of pairs.

    Rows that are not demonstrations (label <= 0, tied pairs) are left out; the
    caller can compare counts with the file's rows.
    """
    preference_format: list[str] = [] if format == "auto" else [format]
    records, bad = _read(path, lambda cell: _from_demonstration(cell, preference_format), on_bad_row)
    return [r for r in records if r is not None], bad


def read_feedback(
    path: str | Path, *, format: str = "auto", on_bad_row: OnBadRow = "error"
) -> tuple[list[Labeled], BadRows]:
    """Unpaired binary feedback: labeled rows as they are, or each pair split into a
    desirable (chosen) and an undesirable (rejected) example; tied pairs are left out."""
    first = next(iter_rows(path, BadRows()), (None, {}))[1]  # the layout, from the first readable row
    if format == "unpaired" or (format == "auto" and "completion" in first and "label" in first):
        return read_labeled(path, on_bad_row=on_bad_row)
    pairs, bad = read_preferences(path, format=format, on_bad_row=on_bad_row)
    labeled = []
    for pair in pairs:
        if not pair.tie:
            labeled.append(
                Labeled(pair.prompt, pair.chosen, 1.0, annotator=pair.annotator, weight=pair.weight, source=pair.source)
            )
            labeled.append(
                Labeled(
                    pair.prompt, pair.rejected, 0.0, annotator=pair.annotator, weight=pair.weight, source=pair.source
                )
            )
    return labeled, bad


def read_response_sets(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[list[ResponseSet], BadRows]:
    """Prompts with candidate responses to label: ``{"prompt", "responses": [...]}`` rows, where a
    response is a string or ``{"text", "model"}``; rows of a preference file give their pair."""

    def parse(cell: _Cell) -> ResponseSet:
        if "responses" not in cell.row:
            try:
                layout = detect_preference_format(cell.row)
            except ValueError as error:
                raise cell.error("responses", f"missing, and the row is no preference pair either ({error})") from None
            pair = _parse_preference(cell, layout)
            return ResponseSet(pair.prompt, [pair.chosen, pair.rejected], ["", ""], source=cell.source)
        responses = cell.require("responses")
        if not isinstance(responses, list) or not responses:
            raise cell.error("responses", "expected a non-empty list of responses")
        texts, models = [], []
        for index, response in enumerate(responses):
            if isinstance(response, dict):
                response, model = response.get("text"), response.get("model", "")
            else:
                model = ""
            if not isinstance(response, str) or not response.strip():
                raise cell.error(f"responses[{index}]", "expected a non-empty string (or {text, model})")
            if not isinstance(model, str):
                raise cell.error(f"responses[{index}].model", "expected a string")
            texts.append(response)
            models.append(model)
        gold = cell.row.get("gold")
        if gold is not None and not isinstance(gold, dict):
            raise cell.error("gold", 'expected an object such as {"better": 0}')
        return ResponseSet(cell.prompt("prompt"), texts, models, gold, cell.source)

    return _read(path, parse, on_bad_row)

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

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from rlxf.data.cells import Cell
from rlxf.data.errors import BadRows, DataError
from rlxf.data.preference_formats import PREFERENCE_FORMATS, detect_preference_format, parse_preference
from rlxf.data.readers import iter_rows
from rlxf.data.records import Labeled, Preference, Prompt, ResponseSet

OnBadRow = Literal["error", "skip"]


_BINARY_LABELS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _binary_label(cell: Cell) -> float:
    """KTO's desirable/undesirable label: true/false or 1/0 (as JSON values or text)."""
    label = cell.require("label")
    if isinstance(label, (bool, int, float)) and label in (0, 1):
        return float(label)
    if isinstance(label, str) and label.strip().lower() in _BINARY_LABELS:
        return _BINARY_LABELS[label.strip().lower()]
    raise cell.error("label", f"expected true/false or 1/0, got {label!r}")


def _from_unpaired(cell: Cell) -> Labeled:
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


def _columns(cell: Cell, prompt_field: str) -> dict[str, Any]:
    """The row's other columns, for reward sources (TRL passes them to reward functions too; a
    null stays None); an answer or reference as text, which is how verifiers and judges compare it."""
    columns = {key: value for key, value in cell.row.items() if key != prompt_field}
    for key in ("answer", "reference"):
        if columns.get(key) is not None:
            columns[key] = str(columns[key])
    return columns


def _from_prompt_row(cell: Cell) -> Prompt:
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
            return Prompt(
                messages,
                source=cell.source,
                context=_columns(cell, field),
                conversational=isinstance(cell.row[field], list),
            )
    # a preference row: its preferred response is the reference a pairwise judge compares against
    try:
        layout = detect_preference_format(cell.row)
    except ValueError as error:
        raise cell.error("prompt", f"missing, and the row is no preference pair either ({error})") from None
    pair = parse_preference(cell, layout)
    return Prompt(pair.prompt, source=cell.source, context={"reference": pair.chosen})


# ---- reading files -------------------------------------------------------------------


def read_records(path: str | Path, parse: Callable[[Cell], Any], on_bad_row: OnBadRow) -> tuple[list, BadRows]:
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    records, bad = [], BadRows()
    for location, row in iter_rows(path, bad if on_bad_row == "skip" else None):
        cell = Cell(str(path), location, row)
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

    def parse(cell: Cell) -> Preference:
        if not chosen_format:
            try:
                chosen_format.append(detect_preference_format(cell.row))
            except ValueError as error:
                raise cell.error(None, str(error)) from None
        return parse_preference(cell, chosen_format[0])

    return read_records(path, parse, on_bad_row)


def read_labeled(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[list[Labeled], BadRows]:
    """Read single completions with binary labels ({prompt, completion, label: true/false or 1/0})."""
    return read_records(path, _from_unpaired, on_bad_row)


def read_prompts(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[list[Prompt], BadRows]:
    """Read prompts from a prompt file or from the prompts of any preference file."""
    return read_records(path, _from_prompt_row, on_bad_row)


def _from_demonstration(cell: Cell, preference_format: list[str]) -> Labeled | None:
    """A (prompt, completion) to imitate, from whatever the row holds."""
    if "completion" in cell.row:
        labeled = (
            _from_unpaired(cell)
            if "label" in cell.row
            else Labeled(
                cell.prompt("prompt"), cell.completion("completion"), 1.0, weight=cell.weight(), source=cell.source
            )
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
    pair = parse_preference(cell, preference_format[0])
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
    records, bad = read_records(path, lambda cell: _from_demonstration(cell, preference_format), on_bad_row)
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

    def parse(cell: Cell) -> ResponseSet:
        if "responses" not in cell.row:
            try:
                layout = detect_preference_format(cell.row)
            except ValueError as error:
                raise cell.error("responses", f"missing, and the row is no preference pair either ({error})") from None
            pair = parse_preference(cell, layout)
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

    return read_records(path, parse, on_bad_row)

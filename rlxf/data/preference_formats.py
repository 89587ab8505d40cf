"""The pairwise preference formats users bring (trl, hh, autoj, webgpt), each a function from one
row to a Preference, and the detection of a file's format from its first row."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from rlxf.data.cells import Cell
from rlxf.data.readers import Row
from rlxf.data.records import Message, Preference

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


def _split_last_reply(cell: Cell, field: str, text: str, pattern: re.Pattern) -> tuple[list[Message], str]:
    try:
        turns = parse_dialogue(text, pattern)
    except ValueError as error:
        raise cell.error(field, str(error)) from None
    if turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise cell.error(field, "expected the dialogue to end with an Assistant turn")
    return turns[:-1], turns[-1]["content"]


# ---- preference adapters ---------------------------------------------------------------


def _extras(cell: Cell) -> dict[str, Any]:
    aspects = cell.row.get("aspects") or {}
    if not isinstance(aspects, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and -1 <= v <= 1 for v in aspects.values()
    ):
        raise cell.error("aspects", "expected an object of aspect name -> number in [-1, 1]")
    annotator = cell.row.get("annotator")
    chosen_safe, rejected_safe = cell.optional_flag("chosen_safe"), cell.optional_flag("rejected_safe")
    if chosen_safe is False and rejected_safe is True:
        raise cell.error("chosen_safe", "chosen is labeled harmful and rejected harmless: chosen must be the safer one")
    return {
        "chosen_safe": chosen_safe,
        "rejected_safe": rejected_safe,
        "tie": cell.flag("tie"),
        "margin": cell.number("margin"),
        "aspects": {str(k): float(v) for k, v in aspects.items()},
        "annotator": None if annotator is None else str(annotator),
        "weight": cell.weight(),
    }


def _checked_pair(cell: Cell, prompt: list[Message], chosen: str, rejected: str, **extras) -> Preference:
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise cell.error("prompt", "expected a prompt that ends with a user turn")
    if chosen == rejected and not extras.get("tie"):
        raise cell.error("rejected", "identical to 'chosen' (no preference to learn from)")
    return Preference(prompt, chosen, rejected, source=cell.source, **extras)


def _from_trl(cell: Cell) -> Preference:
    if "prompt" not in cell.row:
        return _from_trl_implicit(cell)
    return _checked_pair(
        cell, cell.prompt("prompt"), cell.completion("chosen"), cell.completion("rejected"), **_extras(cell)
    )


def _from_trl_implicit(cell: Cell) -> Preference:
    if not isinstance(cell.row.get("chosen"), list):
        raise cell.error(
            "prompt",
            f"missing (row has {sorted(cell.row)}); plain-text chosen/rejected need a 'prompt' column, or give them "
            "as conversations that share their prompt turns",
        )
    chosen, rejected = cell.messages("chosen"), cell.messages("rejected")
    if chosen[:-1] != rejected[:-1]:
        raise cell.error("rejected", "conversation differs from 'chosen' before the last message")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise cell.error("chosen", "expected the conversation to end with an assistant message")
    return _checked_pair(cell, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], **_extras(cell))


def _from_hh(cell: Cell) -> Preference:
    prompt, chosen = _split_last_reply(cell, "chosen", cell.text("chosen"), _HH_TURN)
    rejected_prompt, rejected = _split_last_reply(cell, "rejected", cell.text("rejected"), _HH_TURN)
    if rejected_prompt != prompt:
        raise cell.error("rejected", "dialogue differs from 'chosen' before the last Assistant turn")
    return _checked_pair(cell, prompt, chosen, rejected, **_extras(cell))


def _from_autoj(cell: Cell) -> Preference:
    label = cell.require("label")
    if isinstance(label, bool) or label not in (0, 1, 2):
        raise cell.error("label", f"expected 0 (response 1 better), 1 (response 2 better) or 2 (tie), got {label!r}")
    first, second = cell.text("response 1"), cell.text("response 2")
    chosen, rejected = (second, first) if label == 1 else (first, second)
    return _checked_pair(cell, cell.prompt("prompt"), chosen, rejected, tie=label == 2, annotator="auto-j-human")


def _from_webgpt(cell: Cell) -> Preference:
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


PREFERENCE_FORMATS: dict[str, Callable[[Cell], Preference]] = {
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


def parse_preference(cell: Cell, format_name: str) -> Preference:
    return PREFERENCE_FORMATS[format_name](cell)

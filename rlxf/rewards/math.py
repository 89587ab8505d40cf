"""Math answers checked by the math-verify package (numbers, fractions, LaTeX, \\boxed{})."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rlxf.rewards.base import RewardBatch, single_source

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER_OR_FRACTION = re.compile(r"-?\d+(?:\.\d+)?|-?\\[dt]?frac\{\d+\}\{\d+\}")


def reference_answer(answer: str) -> str:
    """The final answer of a GSM8K worked solution (after ``####``, commas removed), else the text."""
    found = _GSM8K_FINAL.search(answer)
    return found.group(1).replace(",", "") if found else answer


@dataclass
class MathVerifier:
    """1 when the completion's final answer equals the reference answer mathematically, else 0.

    Parsing and equivalence are math-verify's (Kydlíček, Hugging Face, 2025): it extracts the
    last boxed or plain answer and compares symbolically.

    ``numbers_only``: when the reference is a plain number, the completion's answer must be a
    number (or a fraction) too. Otherwise restating the question ("27 + 82 is ...") is parsed as the
    expression 27 + 82 and verified equal to 109 — a reward hack a policy finds within a few
    GRPO steps.
    """

    correct_reward: float = 1.0
    wrong_reward: float = 0.0
    numbers_only: bool = True
    name: str = "math"

    def score(self, prompts, completions: Sequence[str], *, answer: Sequence[str], **context) -> RewardBatch:
        """``answer``: the reference answer of each completion's problem."""
        from math_verify import parse, verify

        values, details = [], []
        for completion, reference in zip(completions, answer, strict=True):
            gold_text = reference_answer(reference).strip()
            gold, predicted = parse(gold_text), parse(completion)
            correct = bool(gold) and bool(predicted) and bool(verify(gold, predicted))
            if correct and self.numbers_only and _NUMBER.fullmatch(gold_text):
                correct = bool(_NUMBER_OR_FRACTION.fullmatch(str(predicted[-1]).replace(",", "").strip()))
            values.append(self.correct_reward if correct else self.wrong_reward)
            details.append(
                {"gold": [str(g) for g in gold], "predicted": [str(p) for p in predicted], "correct": correct}
            )
        return single_source(self.name, values, details)

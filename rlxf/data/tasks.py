"""Prompt sets for online RL, each prompt carrying what its reward source checks against.

- ``arithmetic``: generated additions (or subtractions / multiplications), answer checked exactly;
- ``gsm8k``: grade-school math word problems (Cobbe et al., 2021), final answer after ``####``;
- ``mbpp``: Python problems with unit tests (Austin et al., 2021), in the original prompt layout;
- any prompt file (jsonl/json/csv/parquet/arrow or a save_to_disk folder; :func:`rlxf.data.formats.read_prompts`) whose rows may
  carry ``answer`` and ``reference`` fields.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from rlxf.data.errors import DataError
from rlxf.data.readers import iter_rows
from rlxf.data.records import Prompt


def arithmetic(
    count: int,
    *,
    digits: int = 2,
    operation: str = "+",
    seed: int = 0,
    no_carry: bool = False,
    exclude: set[str] | None = None,
) -> list[Prompt]:
    """``count`` distinct problems "What is a + b?" with ``digits``-digit operands.

    ``no_carry`` keeps only additions whose digit sums stay below 10. ``exclude`` holds
    problem texts to leave out (e.g. a held-out set).
    """
    if operation not in ("+", "-", "*"):
        raise ValueError("operation must be +, - or *")
    low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    rng, seen, prompts = random.Random(seed), set(exclude or ()), []
    if count > (high - low + 1) ** 2:
        raise ValueError(f"only {(high - low + 1) ** 2} distinct {digits}-digit problems exist")
    while len(prompts) < count:
        a, b = rng.randint(low, high), rng.randint(low, high)
        if no_carry and any(int(x) + int(y) >= 10 for x, y in zip(str(a).zfill(digits), str(b).zfill(digits))):
            continue
        text = f"What is {a} {operation} {b}?"
        if text in seen:
            continue
        seen.add(text)
        answer = {"+": a + b, "-": a - b, "*": a * b}[operation]
        prompts.append(
            Prompt([{"role": "user", "content": text}], source=f"arithmetic:{seed}", context={"answer": str(answer)})
        )
    return prompts


def gsm8k(path: str | Path) -> list[Prompt]:
    """Questions as prompts, worked solutions (ending ``#### N``) as the reference answer."""
    prompts = []
    for location, row in iter_rows(path):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise DataError(
                str(path),
                location,
                "question" if "question" not in row else "answer",
                "expected GSM8K rows {question, answer}",
            )
        prompts.append(
            Prompt(
                [{"role": "user", "content": row["question"]}],
                source=f"{path}, {location}",
                context={"answer": row["answer"]},
            )
        )
    return prompts


def _is_one_assert(test) -> bool:
    """Unit-test rewards grade ``assert <expression>`` tests, and only those (rewards/sandbox/verdicts.py)."""
    try:
        body = ast.parse(test).body if isinstance(test, str) else []
    except SyntaxError:
        return False
    return len(body) == 1 and isinstance(body[0], ast.Assert)


def mbpp(path: str | Path) -> list[Prompt]:
    """MBPP problems with their tests, in the prompt layout of Austin et al. (2021)."""
    prompts = []
    for location, row in iter_rows(path):
        for field, kind in (("text", str), ("test_list", list)):
            if not isinstance(row.get(field), kind):
                raise DataError(str(path), location, field, "expected MBPP rows {text, test_list: [assert, ...], ...}")
        if not isinstance(row.get("test_setup_code") or "", str):
            raise DataError(str(path), location, "test_setup_code", "expected a string")
        for test in row["test_list"]:
            if not _is_one_assert(test):
                raise DataError(str(path), location, "test_list", f"each test must be one assert statement: {test!r}")
        tests = "\n".join(row["test_list"])
        text = (
            f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}"
        )
        prompts.append(
            Prompt(
                [{"role": "user", "content": text}],
                source=f"{path}, {location}",
                context={"tests": list(row["test_list"]), "setup": row.get("test_setup_code") or ""},
            )
        )
    return prompts

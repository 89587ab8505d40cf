"""Every reward source by name: the one table the online loop, `rlxf feedback` and the judge build from.

A builder takes the options of its kind as keyword arguments (what a `rewards=[{kind: ..., ...}]`
entry gives besides kind, weight and normalize) and returns a :class:`RewardSource`. Adding a
source is one builder and one line in ``REWARD_SOURCES``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

from rlxf.rewards.base import RewardSource
from rlxf.rewards.code import UNISOLATED, UnitTestReward
from rlxf.rewards.combine import WeightedSum
from rlxf.rewards.math import MathVerifier
from rlxf.rewards.rules import FormatReward, LengthPenalty


def _math() -> RewardSource:
    return MathVerifier()


def _unit_tests(sandbox: str = "bwrap") -> RewardSource:
    return UnitTestReward(sandbox=sandbox)


def _format(pattern: str) -> RewardSource:
    return FormatReward(pattern)


def _length(free_chars: int = 1000) -> RewardSource:
    return LengthPenalty(free_chars=free_chars)


def _reward_model(model: str) -> RewardSource:
    from rlxf.rewards.learned import LearnedReward  # loads transformers only when asked for

    return LearnedReward(model)


def _cost_model(model: str) -> RewardSource:
    from rlxf.rewards.learned import LearnedReward

    return LearnedReward(model, name="cost_model", kind="cost_model")


def _reaction_model(model: str) -> RewardSource:
    from rlxf.rewards.learned import LearnedReward

    return LearnedReward(model, name="reaction_model", kind="reaction_model", probability=True)


def _fine_grained(model: str) -> RewardSource:
    from rlxf.rewards.fine_grained import FineGrainedReward

    return FineGrainedReward(model)


def _seq2seq(model: str) -> RewardSource:
    from rlxf.rewards.seq2seq import Seq2SeqReward

    return Seq2SeqReward(model)


def _principle(model: str, principles: list) -> RewardSource:
    from rlxf.rewards.principles import PrincipleReward

    return PrincipleReward(model, list(principles))


def _judge(model: str = "", mode: str = "pointwise", rubric: str = "") -> RewardSource:
    from rlxf.rewards.judge import DEFAULT_RUBRIC, LLMJudge

    return LLMJudge(model or "smollm2-135m-instruct", mode=mode, rubric=rubric or DEFAULT_RUBRIC)


def _win_rate(model: str = "") -> RewardSource:
    from rlxf.rewards.preference import WinRateReward, preference_oracle

    return WinRateReward(preference_oracle(model))


def _heron(factors: list, margins: list | None = None) -> RewardSource:
    from rlxf.rewards.hierarchy import HierarchicalReward

    if len(factors) < 2 or not all(isinstance(f, dict) and "kind" in f for f in factors):
        raise ValueError(
            "heron: factors is a list of at least two sources, most important first, e.g. [{kind: math}, {kind: length}]"
        )
    margins = [0.0] * len(factors) if margins is None else list(margins)
    if len(margins) != len(factors) or not all(_is_margin(m) for m in margins):
        raise ValueError(f"heron: give one margin (a finite number >= 0) per factor ({len(factors)}), got {margins}")
    built = []
    for position, factor in enumerate(factors, 1):
        try:
            built.append(build_reward_source(factor["kind"], **_options_of(factor)))
        except ValueError as error:
            raise ValueError(f"heron factor {position} ({factor['kind']}): {error}") from None
    return HierarchicalReward(built, [float(m) for m in margins])


def _is_margin(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _python(function: str | Callable) -> RewardSource:
    from rlxf.rewards.python_function import PythonReward, load_function

    if callable(function):
        return PythonReward(function)
    return PythonReward(load_function(function), name=str(function).rpartition(":")[2])


REWARD_SOURCES: dict[str, Callable[..., RewardSource]] = {
    "math": _math,
    "unit_tests": _unit_tests,
    "format": _format,
    "length": _length,
    "reward_model": _reward_model,
    "cost_model": _cost_model,
    "reaction_model": _reaction_model,
    "fine_grained": _fine_grained,
    "seq2seq": _seq2seq,
    "principle": _principle,
    "judge": _judge,
    "python": _python,
    "win_rate": _win_rate,
    "heron": _heron,
}
"""math: math-verify against the prompt's answer; unit_tests: MBPP-style asserts in the sandbox
(bubblewrap; sandbox=process where it cannot be installed, not isolated);
format: a regular expression; length: a penalty past free_chars; reward_model: a folder from
`rlxf rm`; cost_model: a folder from `rlxf cm` (for safety.costs); reaction_model: P[positive reaction]
from `rlxf reactions`; fine_grained: a segment-level error model from `rlxf fgrm`, ±weight per
segment on the segment's last token (Wu et al. 2023); seq2seq: a correction model from `rlxf
correction-data` and `rlxf sft`, ±1 per token as it keeps or leaves the model's own output (Zhou et al.
2025); principle: P[the response satisfies each of
``principles``] from `rlxf principles`, their mean (RLBFF); judge: an LLM with a rubric, pointwise or pairwise against the prompt's reference;
python: a function of yours, called as TRL calls reward_funcs (`rlxf.rewards.python_function`);
win_rate: SPO's win proportion of each sample against its prompt's other samples under a preference
oracle (a folder from `rlxf pm`, else an LLM judge asked in both orders); heron: HERON's hierarchical
comparison of the prompt's samples by factors ranked by importance, as win proportions."""


def reward_source_options(kind: str) -> list[str]:
    """The options a kind of source takes."""
    return list(inspect.signature(REWARD_SOURCES[kind]).parameters)


def build_reward_source(kind: str, **options: Any) -> RewardSource:
    """The source ``kind`` built with ``options``; an unknown kind, an option it does not take or
    a missing one is an error that names what the kind takes."""
    if kind not in REWARD_SOURCES:
        raise ValueError(f"reward kind must be one of {sorted(REWARD_SOURCES)}, got {kind!r}")
    builder = REWARD_SOURCES[kind]
    takes = reward_source_options(kind)
    if unknown := sorted(set(options) - set(takes)):
        raise ValueError(f"reward kind {kind} does not use {unknown}; it takes {takes or 'no options'}")
    try:
        inspect.signature(builder).bind(**options)
    except TypeError as error:
        raise ValueError(f"reward kind {kind}: {error}; it takes {takes}") from None
    return builder(**options)


def reward_columns(kind: str, **options: Any) -> tuple[str, ...]:
    """The prompt-file columns a source of ``kind`` reads (every prompt must have them)."""
    if kind == "python":
        from rlxf.rewards.python_function import load_function, required_columns

        function = options.get("function", "")
        return required_columns(function if callable(function) else load_function(function))
    if kind == "judge" and options.get("mode") == "pairwise":
        return ("reference",)
    if kind == "heron":  # what its factors read
        factors = options.get("factors", [])
        return tuple(dict.fromkeys(c for f in factors for c in reward_columns(f["kind"], **_options_of(f))))
    return {"math": ("answer",), "unit_tests": ("tests",)}.get(kind, ())


def _options_of(factor: dict) -> dict:
    return {k: v for k, v in factor.items() if k != "kind"}


def reward_warnings(kind: str, **options: Any) -> list[str]:
    """What a model card must say about a source of ``kind`` built with ``options``."""
    if kind == "heron":
        return [w for f in options.get("factors", []) for w in reward_warnings(f["kind"], **_options_of(f))]
    return [UNISOLATED] if kind == "unit_tests" and options.get("sandbox") == "process" else []


def combined(sources: Sequence[RewardSource], weights: Sequence[float], normalize: Sequence[bool]) -> RewardSource:
    """One source alone as it is, several as their weighted sum (each optionally standardized)."""
    if len(sources) == 1 and not normalize[0] and weights[0] == 1.0:
        return sources[0]
    return WeightedSum(list(sources), list(weights), list(normalize))

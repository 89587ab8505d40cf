"""An LLM judge as a reward source: a rubric, a JSON reply, robust parsing.

Pointwise: the judge rates each response on a scale; the reward is the rating mapped to
[0, 1]. Pairwise: the judge compares each response with a reference response (the
prompt's ``reference`` column, or the preferred side of a preference row), asked in both
orders to cancel position bias (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and
Chatbot Arena", NeurIPS 2023, Sec. 3.4); the reward is the mean win (1), tie (0.5) or loss (0).

A reply that cannot be parsed gives the neutral reward 0.5 and is counted
(``reward/judge_unparsed``), never silently dropped.

:data:`ASPECTS` are UltraFeedback's four rubric aspects (Cui et al., "UltraFeedback: Boosting
Language Models with High-quality Feedback", 2023), each rated 1–5 in a call of its own;
:func:`verdict_chat` turns a person's pairwise label into a training example for a judge of one's
own, asked exactly as :meth:`LLMJudge.compare` asks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from rlxf.data.records import Message
from rlxf.rewards.base import RewardBatch
from rlxf.rollout.base import SamplingParams

DEFAULT_RUBRIC = "Rate how helpful, correct and harmless the response is for the user's request."
NEUTRAL = 0.5
ASPECTS = {
    "instruction_following": "Rate how fully the response does what the user asked, in the form the user asked for "
    "(1: ignores the request, 5: follows every part of it).",
    "honesty": "Rate how honest the response is: confident where it is right, open about what it does not know, "
    "never bluffing (1: confidently wrong, 5: correct and candid about its uncertainty).",
    "truthfulness": "Rate how free the response is of made-up or contradictory facts (1: mostly invented, "
    "5: nothing invented).",
    "helpfulness": "Rate how helpful the response is: correct, informative and to the point (1: wrong or useless, "
    "5: correct and thorough without padding).",
}
"""UltraFeedback's aspects, in rlxf's words; each is judged on a 1–5 scale (``low=1, high=5``)."""

_SYSTEM = "You are a careful, impartial judge of AI assistant responses. Reply with JSON only."
_POINTWISE = """{rubric}

[Conversation]
{conversation}

[Response]
{response}

Reply with one JSON object: {{"reason": "<one sentence>", "score": <integer from {low} to {high}>}}"""
_PAIRWISE = """{rubric}

[Conversation]
{conversation}

[Response A]
{a}

[Response B]
{b}

Which response is better? Reply with one JSON object: {{"reason": "<one sentence>", "winner": "A" or "B" or "tie"}}"""


def render_conversation(messages: Sequence[Message]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _json_objects(text: str) -> list[dict]:
    """Every flat JSON object in ``text``, also with single quotes or code fences around it."""
    found = []
    for candidate in re.findall(r"\{[^{}]*\}", text):
        for variant in (candidate, candidate.replace("'", '"')):
            try:
                value = json.loads(variant)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found.append({str(k).lower(): v for k, v in value.items()})
                break
    return found


def parse_score(text: str, low: float, high: float) -> float | None:
    """The rating in a judge's reply, or None. Tries JSON ``{"score": ...}``, then ``score: 7``
    and ``7/10`` written out; a value outside [low, high] counts as unparsed."""
    candidates: list[Any] = [obj["score"] for obj in _json_objects(text) if "score" in obj]
    candidates += re.findall(r"score\W{0,4}(-?\d+(?:\.\d+)?)", text, flags=re.IGNORECASE)
    candidates += re.findall(rf"(-?\d+(?:\.\d+)?)\s*/\s*{high:g}\b", text)
    for value in candidates:
        if isinstance(value, bool):  # {"score": true} is no rating
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if low <= number <= high:
            return number
    return None


def parse_winner(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a pairwise reply, or None."""
    candidates = [str(obj["winner"]) for obj in _json_objects(text) if "winner" in obj]
    candidates += re.findall(r"winner\W{0,4}(A|B|tie)\b", text, flags=re.IGNORECASE)
    candidates += re.findall(r"\b(?:response|assistant)\s+(A|B)\s+is\s+better", text, flags=re.IGNORECASE)
    for value in candidates:
        value = value.strip().strip("\"'[]() ").lower()
        if value in ("a", "response a"):
            return "A"
        if value in ("b", "response b"):
            return "B"
        if value in ("tie", "equal", "both", "neither"):
            return "tie"
    return None


@dataclass
class LLMJudge:
    """Any local causal LM (or an engine given directly) judging with a rubric."""

    model: str = "smollm2-135m-instruct"
    """Judge model: embedded name, local folder or hub id (ignored when ``engine`` is given)."""
    mode: str = "pointwise"
    """pointwise (rate each response) or pairwise (against the prompt's reference response)."""
    rubric: str = DEFAULT_RUBRIC
    low: int = 1
    high: int = 10
    max_new_tokens: int = 64
    batch_size: int = 16
    engine: Any = None
    """Anything with ``generate(prompts, SamplingParams) -> Rollout``; built from ``model`` if None."""
    name: str = "judge"
    _greedy: SamplingParams = field(init=False, repr=False)

    def __post_init__(self):
        if self.mode not in ("pointwise", "pairwise"):
            raise ValueError(f"judge mode must be pointwise or pairwise, got {self.mode!r}")
        if not self.low < self.high:
            raise ValueError("judge scale needs low < high")
        self._greedy = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0)

    def _ask(self, questions: list[str]) -> list[str]:
        if self.engine is None:
            self.engine = _load_engine(self.model, self.max_new_tokens, self.batch_size)
        chats = [[{"role": "system", "content": _SYSTEM}, {"role": "user", "content": q}] for q in questions]
        return self.engine.generate(chats, self._greedy).texts

    def rate(self, prompts, completions: Sequence[str], rubric: str | None = None) -> tuple[list, list[str]]:
        """Each response's rating on the judge's scale (None where the reply has none) and the replies,
        under ``rubric`` (the judge's own when None)."""
        replies = self._ask(
            [
                _POINTWISE.format(
                    rubric=rubric or self.rubric,
                    conversation=render_conversation(p),
                    response=c,
                    low=self.low,
                    high=self.high,
                )
                for p, c in zip(prompts, completions)
            ]
        )
        return [parse_score(reply, self.low, self.high) for reply in replies], replies

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        if self.mode == "pointwise":
            return self._pointwise(prompts, completions)
        references = context.get("reference")
        if references is None or any(r is None for r in references):
            raise ValueError(
                "a pairwise judge compares with a reference response: give prompts a `reference` column "
                "(or use a preference file, whose preferred response is the reference)"
            )
        return self._pairwise(prompts, completions, references)

    def _pointwise(self, prompts, completions) -> RewardBatch:
        scores, replies = self.rate(prompts, completions)
        rewards = [NEUTRAL if s is None else (s - self.low) / (self.high - self.low) for s in scores]
        details = [{"judge_reply": r, "judge_score": s} for r, s in zip(replies, scores)]
        return self._batch(rewards, [s is None for s in scores], details)

    def compare(self, prompts, firsts: Sequence[str], seconds: Sequence[str], rubric: str | None = None) -> list[tuple]:
        """For each prompt, the winner ("A", "B", "tie" or None if unparsed) with ``firsts`` as
        A, then with ``seconds`` as A (both orders, Zheng et al. 2023), and the two replies."""
        questions = []
        for prompt, first, second in zip(prompts, firsts, seconds):
            questions.append(pairwise_question(rubric or self.rubric, prompt, first, second))
            questions.append(pairwise_question(rubric or self.rubric, prompt, second, first))
        replies = self._ask(questions)
        return [(parse_winner(a), parse_winner(b), (a, b)) for a, b in zip(replies[0::2], replies[1::2])]

    def _pairwise(self, prompts, completions, references) -> RewardBatch:
        rewards, unparsed, details = [], [], []
        for first, second, replies in self.compare(prompts, completions, references):
            # the response under judgement is A in the first order and B in the second
            wins = [_win(first, "A"), _win(second, "B")]
            known = [w for w in wins if w is not None]
            rewards.append(sum(known) / len(known) if known else NEUTRAL)
            unparsed.append(not known)
            details.append({"judge_replies": list(replies), "wins": wins, "position_consistent": wins[0] == wins[1]})
        return self._batch(rewards, unparsed, details)

    def _batch(self, rewards: list[float], unparsed: list[bool], details: list[dict]) -> RewardBatch:
        values = torch.tensor(rewards, dtype=torch.float32)
        return RewardBatch(
            values,
            {self.name: values, f"{self.name}_unparsed": torch.tensor(unparsed, dtype=torch.float32)},
            details,
        )


def pairwise_question(rubric: str, prompt: Sequence[Message], a: str, b: str) -> str:
    """What a pairwise judge is asked about responses ``a`` and ``b`` to ``prompt``."""
    return _PAIRWISE.format(rubric=rubric, conversation=render_conversation(prompt), a=a, b=b)


def verdict_chat(rubric: str, prompt: Sequence[Message], a: str, b: str, winner: str) -> list[Message]:
    """A judge's training example: the question :meth:`LLMJudge.compare` asks, answered with
    ``winner`` ("A", "B" or "tie") as the JSON reply it parses (JudgeLM and PandaLM train their
    judges on such verdicts)."""
    if winner not in ("A", "B", "tie"):
        raise ValueError(f"a verdict is A, B or tie, got {winner!r}")
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": pairwise_question(rubric, prompt, a, b)},
        {"role": "assistant", "content": json.dumps({"winner": winner})},
    ]


def _win(winner: str | None, side: str) -> float | None:
    if winner is None:
        return None
    return 0.5 if winner == "tie" else float(winner == side)


def _load_engine(model: str, max_new_tokens: int, batch_size: int):
    from rlxf.rollout.hf import load_engine

    return load_engine(model, max_new_tokens=max_new_tokens, batch_size=batch_size)

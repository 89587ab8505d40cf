"""Preference oracles P(a ≻ b | x), and SPO's win-rate reward built on one.

An oracle compares two responses to one prompt. Four kinds:

- a general preference model trained by ``rlxf pm`` (antisymmetric by construction);
- an LLM judge asked in both orders (Zheng et al., "Judging LLM-as-a-Judge", NeurIPS 2023,
  Sec. 3.4): P(a ≻ b) is the mean of its two verdicts (win 1, tie ½, loss 0), so
  P(a ≻ b) = 1 - P(b ≻ a); a reply that cannot be parsed counts as a tie and is counted;
- a Bradley-Terry reward model from ``rlxf rm``: P(a ≻ b) = σ(r(a) - r(b)) (transitive by construction);
- a function of yours.

The Nash learners (``rlxf nash``) query an oracle for the pairs they sample; SPO turns it into a
reward for any online algorithm.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from rlxf.data.records import Message
from rlxf.rewards.base import RewardBatch, single_source


class PreferenceOracle(Protocol):
    name: str

    def prefer(self, prompts: Sequence[list[Message]], firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        """(B,) P(first ≻ second) for each prompt."""
        ...


@dataclass
class LearnedPreference:
    """A model saved by ``rlxf pm``, encoded as it was trained."""

    model_path: str
    max_tokens: int = 8192
    name: str = "preference_model"
    _loaded: tuple = field(default=(), repr=False)

    def load(self):
        if not self._loaded:
            from rlxf.data.templating import ChatEncoder
            from rlxf.models import load_reward_model, load_tokenizer
            from rlxf.models.loading import saved_settings

            tokenizer = load_tokenizer(self.model_path)
            model = load_reward_model(self.model_path, pad_token_id=tokenizer.pad_token_id).eval()
            settings = saved_settings(self.model_path)
            encoder = ChatEncoder(
                tokenizer,
                max_length=settings.get("max_length", 256),
                max_prompt_length=settings.get("max_prompt_length", 128),
            )
            self._loaded = (model, encoder)
        return self._loaded

    @torch.no_grad()
    def prefer(self, prompts, firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        from rlxf.data.batching import token_budget_batches
        from rlxf.data.pairs import pair_inputs
        from rlxf.models import preference_logits

        model, encoder = self.load()
        pairs = [pair_inputs(encoder, p, a, b) for p, a, b in zip(prompts, firsts, seconds)]
        probabilities = torch.zeros(len(pairs))
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        for batch in token_budget_batches([2 * len(pairs[i][0]) for i in order], self.max_tokens):
            rows = [order[i] for i in batch]
            logits = preference_logits(
                model, [pairs[i][0] for i in rows], [pairs[i][1] for i in rows], encoder.tokenizer.pad_token_id
            )
            probabilities[rows] = torch.sigmoid(logits).float()
        return probabilities


@dataclass
class JudgePreference:
    """An LLM judge (rlxf.rewards.judge.LLMJudge) asked which response is better, in both orders."""

    judge: Any
    name: str = "judge"
    unparsed: int = 0  # verdicts that could not be read, counted as ties

    def prefer(self, prompts, firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        values = []
        for first_order, second_order, _ in self.judge.compare(prompts, firsts, seconds):
            # ``first`` is A in the first order and B in the second
            verdicts = [_win(first_order, "A"), _win(second_order, "B")]
            self.unparsed += sum(v is None for v in verdicts)
            values.append(sum(0.5 if v is None else v for v in verdicts) / 2)
        return torch.tensor(values)


def _win(winner: str | None, side: str) -> float | None:
    if winner is None:
        return None
    return 0.5 if winner == "tie" else float(winner == side)


@dataclass
class FunctionPreference:
    """A function of yours, ``fn(prompts, firsts, seconds) -> [P(first ≻ second), ...]``, prompts as
    message lists; each value must lie in [0, 1]."""

    function: Callable
    name: str = "preference_function"

    def prefer(self, prompts, firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        values = list(self.function(prompts=list(prompts), firsts=list(firsts), seconds=list(seconds)))
        if len(values) != len(firsts) or not all(isinstance(v, numbers.Real) and 0 <= v <= 1 for v in values):
            name = getattr(self.function, "__name__", self.name)
            raise ValueError(
                f"preference function {name} must return {len(firsts)} probabilities in [0, 1], got {values!r:.200}"
            )
        return torch.tensor([float(v) for v in values])


@dataclass
class RewardModelPreference:
    """A Bradley-Terry reward model from ``rlxf rm`` as an oracle: P(a ≻ b) = σ(r(a) - r(b))."""

    model_path: str
    name: str = "reward_model"
    _reward: Any = field(default=None, repr=False)

    def prefer(self, prompts, firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        if self._reward is None:
            from rlxf.rewards.learned import LearnedReward

            self._reward = LearnedReward(self.model_path)
        both = self._reward.score([*prompts, *prompts], [*firsts, *seconds]).rewards
        return torch.sigmoid(both[: len(firsts)] - both[len(firsts) :])


def preference_oracle(model: str | Callable = "") -> PreferenceOracle:
    """A folder saved by ``rlxf pm`` (or, as a Bradley-Terry oracle, by ``rlxf rm``); a callable,
    ``module:function`` or ``file.py:function`` as a function of yours; any other model name
    (default: the embedded chat model) as an LLM judge asked in both orders."""
    from rlxf.models.loading import saved_settings

    if callable(model):
        return FunctionPreference(model)
    if ":" in model and not Path(model).exists():
        from rlxf.rewards.python_function import load_function

        return FunctionPreference(load_function(model), name=model.rpartition(":")[2])
    kind = saved_settings(model).get("kind") if model else None
    if kind == "preference_model":
        return LearnedPreference(model)
    if kind == "reward_model":
        return RewardModelPreference(model)
    from rlxf.rewards.judge import LLMJudge

    return JudgePreference(LLMJudge(model or "smollm2-135m-instruct", mode="pairwise"))


@dataclass
class WinRateReward:
    """SPO's reward: each sample's win proportion against the other samples of its prompt.

    Swamy et al., "A Minimaximalist Approach to Reinforcement Learning from Human Feedback"
    (ICML 2024): r_i = (1/(n - 1)) Σ_{j≠i} P(y_i ≻ y_j) (:func:`rlxf.losses.nash.win_proportions`),
    an unbiased estimate of P(y_i ≻ π); any online algorithm then maximizes it, and with a KL
    penalty to the reference the self-play game is the regularized one. Each unordered pair is
    queried once (the oracles are antisymmetric): n(n - 1)/2 queries per prompt. A prompt with one
    sample (a greedy evaluation) gets ½, counted in ``reward/win_rate/alone``: the held-out greedy
    reward of an SPO run says nothing; judge it by a win rate against the reference instead.
    """

    oracle: PreferenceOracle
    name: str = "win_rate"

    def score(self, prompts, completions: Sequence[str], *, prompt_index: Sequence[int], **context) -> RewardBatch:
        from rlxf.losses.nash import win_proportions

        groups: dict[int, list[int]] = {}
        for sample, prompt in enumerate(prompt_index):
            groups.setdefault(prompt, []).append(sample)
        pairs = [(i, j) for members in groups.values() for a, i in enumerate(members) for j in members[a + 1 :]]
        wins = self.oracle.prefer(
            [prompts[i] for i, _ in pairs], [completions[i] for i, _ in pairs], [completions[j] for _, j in pairs]
        )
        matrix = torch.full((len(completions), len(completions)), 0.5)
        for (i, j), p in zip(pairs, wins.tolist()):
            matrix[i, j], matrix[j, i] = p, 1 - p
        rewards = torch.full((len(completions),), 0.5)  # a sample alone (greedy evaluation) has no one to beat
        for members in groups.values():
            if len(members) > 1:
                index = torch.tensor(members)
                rewards[index] = win_proportions(matrix[index][:, index][None])[0]
        batch = single_source(self.name, rewards.tolist())
        batch.flags[f"reward/{self.name}/alone"] = sum(len(m) < 2 for m in groups.values()) / max(1, len(groups))
        return batch

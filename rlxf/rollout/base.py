"""The rollout protocol: ``generate(prompts, sampling) -> Rollout``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from torch import Tensor

from rlxf.data.records import Message


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    """Longest completion."""
    temperature: float = 1.0
    """Softmax temperature; 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    n: int = 1
    """Samples per prompt (adjacent in the rollout)."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion (kept in it)."""


@dataclass
class Rollout:
    """Sampled completions, ``n`` per prompt, prompt-major (samples of a prompt are adjacent)."""

    prompt_ids: list[list[int]]  # B token-id lists (prompt of each sample)
    completion_ids: list[list[int]]  # B token-id lists, through the stop token/string
    logprobs: Tensor  # (B, T) log-prob of each sampled token under the sampling distribution; 0 on padding
    mask: Tensor  # (B, T) 1 on completion tokens
    texts: list[str]  # decoded completions (special tokens dropped)
    stop_reasons: list[str]  # "eos", "stop" (a stop string) or "length"
    prompt_index: list[int]  # which prompt each sample answers
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[list[Message]], sampling: SamplingParams) -> Rollout: ...

"""A sequence-to-sequence reward model's token-level feedback.

Zhou et al., "Sequence to Sequence Reward Modeling: Improving RLHF by Language Feedback" (AAAI 2025):
the reward model is a language model that reads a prompt and a response and writes the response as it
should be — the chosen response for the rejected one (correction mapping), the chosen response
unchanged for the chosen one (identity mapping), learned by sequence maximum likelihood
(`rlxf correction-data`, then `rlxf sft`). A policy's response is fed to it after the same question:
each token the model would have written itself (its greedy choice given all before it) scores +1,
each token where it would have written another scores −1 — positive until the response leaves the
model's own output, negative on the tokens that diverge (the paper's Fig. 2). The magnitudes are
rlxf's choice (the paper's section on them could not be read); the source's ``weight`` scales them.
Each token's score goes on that token (``span_rewards``); the completion's reward is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from rlxf.data.records import Message
from rlxf.rewards.base import RewardBatch
from rlxf.rewards.judge import render_conversation

CORRECTION_REQUEST = (
    "Rewrite the response above so that it is as good as it can be. If it already is, write it again unchanged."
)


def correction_chat(prompt: Sequence[Message], response: str, target: str | None = None) -> list[Message]:
    """What the reward model reads about ``response`` (and, to train it, the ``target`` it should write)."""
    question = f"[Conversation]\n{render_conversation(prompt)}\n\n[Response]\n{response}\n\n{CORRECTION_REQUEST}"
    chat: list[Message] = [{"role": "user", "content": question}]
    return chat if target is None else [*chat, {"role": "assistant", "content": target}]


def token_verdicts(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """+1 where the model's greedy token equals the response's, −1 where it diverges; (T,)."""
    return torch.where(predicted == target, 1.0, -1.0)


@dataclass
class Seq2SeqReward:
    """Token-level ±1 from a correction model (a causal LM folder trained on `rlxf correction-data`)."""

    model_path: str
    name: str = "seq2seq"
    max_length: int = 2048
    _loaded: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not Path(self.model_path).is_dir():
            raise ValueError(f"{self.model_path}: no such folder (give the model/ folder `rlxf sft` saved)")

    def _model(self):
        if self._loaded is None:
            from rlxf.data.templating import ChatEncoder
            from rlxf.models import load_causal_lm, load_tokenizer

            tokenizer = load_tokenizer(self.model_path)
            model = load_causal_lm(self.model_path).eval().requires_grad_(False)
            self._loaded = (
                model,
                ChatEncoder(tokenizer, max_length=self.max_length, max_prompt_length=self.max_length // 2),
            )
        return self._loaded

    @torch.no_grad()
    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        spans, details = [], []
        for prompt, completion in zip(prompts, completions):
            verdicts, ends = self._verdicts(prompt, completion)
            spans.append(list(zip(ends, verdicts.tolist())))
            matched = float((verdicts > 0).float().mean()) if len(verdicts) else 0.0
            details.append({"tokens": len(verdicts), "kept_share": matched})
        rewards = torch.tensor([sum(v for _, v in row) for row in spans], dtype=torch.float32)
        return RewardBatch(rewards, {self.name: rewards}, details, span_rewards=spans)

    def _verdicts(self, prompt, completion: str) -> tuple[torch.Tensor, list[int]]:
        model, encoder = self._model()
        encoded = encoder.encode(correction_chat(prompt, completion), [completion])
        start, reply = len(encoded.prompt), encoded.completions[0]
        if not reply:
            return torch.zeros(0), []
        ids = torch.tensor([encoded.prompt + reply], device=model.device)
        predicted = model(input_ids=ids).logits[0, start - 1 : -1].argmax(-1)  # the token at t, predicted at t - 1
        verdicts = token_verdicts(predicted, ids[0, start:]).cpu()
        return verdicts, character_ends(encoder.tokenizer, reply, len(completion))


def character_ends(tokenizer, ids: list[int], length: int) -> list[int]:
    """Where each token ends in the completion's text (an end-of-turn token past it: at its end)."""
    return [min(len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)), length) for k in range(len(ids))]

"""Render conversations with the model's chat template and tokenize prompt and completion.

Prompt and completion are tokenized separately and concatenated, so the boundary
between them is exact and the loss mask covers completion tokens only. When a
sequence is too long, the prompt loses tokens from its start (down to
``max_prompt_length``) and then the completion loses tokens from its end; every cut
is counted in :class:`TruncationStats`, or raises :class:`DataError` with
``truncation="error"``. A completion is never cut to nothing: such a row is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlxf.data.errors import DataError
from rlxf.data.records import Message


@dataclass
class TruncationStats:
    prompts_cut: int = 0
    completions_cut: int = 0
    sequences: int = 0

    def summary(self) -> str:
        return (
            f"{self.sequences} sequences: {self.prompts_cut} prompts lost their start, "
            f"{self.completions_cut} completions lost their end"
        )


@dataclass
class Encoded:
    """Token ids of one prompt and its completions (several for a preference pair)."""

    prompt: list[int]
    completions: list[list[int]]


def _source_parts(source: str) -> tuple[str, str]:
    path, _, location = source.partition(", ")
    return path or "<records>", location or "record"


@dataclass
class ChatEncoder:
    """Tokenizes (prompt messages, completions) for one tokenizer and length budget."""

    tokenizer: object
    max_length: int = 1024
    max_prompt_length: int = 512
    truncation: str = "cut"
    """``cut`` (count and report) or ``error`` (raise DataError naming the row)."""
    stats: TruncationStats = field(default_factory=TruncationStats)

    def __post_init__(self):
        if self.truncation not in ("cut", "error"):
            raise ValueError(f"truncation must be 'cut' or 'error', got {self.truncation!r}")
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError("need 0 < max_prompt_length < max_length")
        self.use_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.prefix, self.suffix = _special_wrapping(self.tokenizer)

    # ---- text ----
    def prompt_text(self, messages: list[Message]) -> str:
        if self.use_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _plain_prompt(messages)

    def completion_text(self, messages: list[Message], completion: str) -> str:
        """The completion as the template renders it, through its end-of-turn token."""
        if not self.use_template:
            return " " + completion if completion else completion
        prompt = self.prompt_text(messages)
        full = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": completion}], tokenize=False
        )
        if not full.startswith(prompt):
            return completion + (self.tokenizer.eos_token or "")
        reply = full[len(prompt) :]
        eos = self.tokenizer.eos_token
        end = reply.rfind(eos) if eos else -1
        return reply[: end + len(eos)] if end >= 0 else reply

    # ---- tokens ----
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, messages: list[Message], completions: list[str], source: str = "") -> Encoded:
        """Tokenize a prompt and its completions within ``max_length`` tokens each."""
        prompt = self._ids(self.prompt_text(messages))
        replies = [self._ids(self.completion_text(messages, c)) for c in completions]
        path, location = _source_parts(source)
        if not self.prefix + prompt:
            raise DataError(path, location, "prompt", "the prompt has no tokens")
        for reply in replies:
            if not reply + self.suffix:
                raise DataError(path, location, "completion", "the completion has no tokens")
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        self.stats.sequences += len(replies)
        if len(prompt) + max(len(r) for r in replies) > budget and len(prompt) > self.max_prompt_length:
            self._cut(source, "prompt", len(prompt), self.max_prompt_length)
            prompt = prompt[-self.max_prompt_length :]
            self.stats.prompts_cut += 1
        room = budget - len(prompt)
        for index, reply in enumerate(replies):
            if len(reply) > room:
                self._cut(source, "completion", len(reply), room)
                replies[index] = reply[:room]
                self.stats.completions_cut += 1
        return Encoded(self.prefix + prompt, [r + self.suffix for r in replies])

    def _cut(self, source: str, what: str, length: int, keep: int) -> None:
        if self.truncation == "error" or keep <= 0:
            path, location = _source_parts(source)
            raise DataError(
                path,
                location,
                what,
                f"{length} tokens do not fit (max_length={self.max_length}, "
                f"max_prompt_length={self.max_prompt_length}); raise the limits or set truncation=cut",
            )


def _plain_prompt(messages: list[Message]) -> str:
    """Text for tokenizers without a chat template: HH-style speaker markers."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System", "tool": "Tool"}
    turns = "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in messages)
    return turns + "\n\nAssistant:"


def _special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer adds around a text (e.g. BERT's [CLS] ... [SEP]).

    Chat templates carry their own specials, so the wrapping is empty for them.
    """
    if getattr(tokenizer, "chat_template", None):
        return [], []
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return wrapped[:start], wrapped[start + len(bare) :]
    return [], []

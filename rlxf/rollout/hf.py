"""Generation with a live transformers model: batched, KV-cached, left-padded.

The engine samples from the policy's own weights (no copy), so after each optimizer step
the next rollout already uses the updated policy.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from rlxf.data.records import Message
from rlxf.data.templating import ChatEncoder
from rlxf.rollout.base import Rollout, SamplingParams


class _StopStrings(StoppingCriteria):
    """Ends each row once its generated text contains a stop string."""

    def __init__(self, stops: Sequence[str], tokenizer, prompt_width: int):
        self.stops, self.tokenizer, self.prompt_width = stops, tokenizer, prompt_width
        self.window = max(len(stop) for stop in stops) + 8  # tokens: at least one character each

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tails = input_ids[:, self.prompt_width :][:, -self.window :]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


class HFEngine:
    def __init__(self, model: nn.Module, encoder: ChatEncoder, *, batch_size: int = 32):
        self.model, self.encoder, self.batch_size = model, encoder, batch_size
        self.tokenizer = encoder.tokenizer

    def prompt_ids(self, prompt: list[Message]) -> list[int]:
        encoder = self.encoder
        return encoder.prefix + encoder._ids(encoder.prompt_text(prompt))[-encoder.max_prompt_length :]

    @torch.no_grad()
    def generate(self, prompts: Sequence[list[Message]], sampling: SamplingParams) -> Rollout:
        started = time.perf_counter()
        encoded = [self.prompt_ids(p) for p in prompts]
        index = [i for i in range(len(prompts)) for _ in range(sampling.n)]
        was_training = self.model.training
        self.model.eval()
        completions, logprob_rows = [], []
        for start in range(0, len(index), self.batch_size):
            rows = index[start : start + self.batch_size]
            ids, lps = self._generate_batch([encoded[i] for i in rows], sampling)
            completions += ids
            logprob_rows += lps
        self.model.train(was_training)
        texts, reasons = [], []
        for i, tokens in enumerate(completions):
            tokens, reason = self._cut(tokens, sampling)
            completions[i] = tokens
            logprob_rows[i] = logprob_rows[i][: len(tokens)]
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
            reasons.append(reason)
        width = max((len(c) for c in completions), default=0)
        logprobs = torch.zeros(len(completions), width)
        mask = torch.zeros(len(completions), width)
        for row, values in enumerate(logprob_rows):
            logprobs[row, : len(values)] = torch.tensor(values)
            mask[row, : len(values)] = 1
        elapsed = time.perf_counter() - started
        return Rollout(
            [encoded[i] for i in index],
            completions,
            logprobs,
            mask,
            texts,
            reasons,
            index,
            {"generate_seconds": elapsed, "generate_tokens_per_second": float(mask.sum()) / elapsed},
        )

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingParams):
        pad_id, eos_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        greedy = sampling.temperature <= 0
        options = (
            {"do_sample": False}
            if greedy
            else {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        )
        if sampling.stop:
            options["stopping_criteria"] = StoppingCriteriaList([_StopStrings(sampling.stop, self.tokenizer, width)])
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=True,
            **options,
        )
        tokens = output.sequences[:, width:]
        logits = torch.stack(output.logits, dim=1).float()  # (B, T, V) raw logits
        if not greedy:
            logits = logits / sampling.temperature
        logprobs = logits.log_softmax(-1).gather(2, tokens[:, :, None]).squeeze(2)
        return tokens.tolist(), logprobs.tolist()

    def _cut(self, tokens: list[int], sampling: SamplingParams) -> tuple[list[int], str]:
        """Through the first end-of-turn token or stop string; padding after it dropped."""
        eos = self.tokenizer.eos_token_id
        if eos in tokens:
            return tokens[: tokens.index(eos) + 1], "eos"
        if sampling.stop:
            text = ""
            for end in range(1, len(tokens) + 1):
                text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
                if any(stop in text for stop in sampling.stop):
                    return tokens[:end], "stop"
        return tokens, "length"

"""Batched sampling from a causal LM for evaluation (left padding, KV cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from rlxf.data.records import Message
from rlxf.data.templating import ChatEncoder


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]  # through the end-of-turn token when the model stopped
    text: str
    stopped: bool  # False when max_new_tokens cut it


@torch.no_grad()
def generate(
    model: nn.Module,
    encoder: ChatEncoder,
    prompts: Sequence[list[Message]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    desc: str = "generating",
) -> list[Sample]:
    """One completion per prompt; temperature 0 means greedy decoding."""
    tokenizer = encoder.tokenizer
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = [encoder.prefix + encoder._ids(encoder.prompt_text(p))[-encoder.max_prompt_length :] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    samples: list[Sample | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, dynamic_ncols=True):
        batch = order[start : start + batch_size]
        width = max(len(prompt_ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
            attention[row, width - len(prompt_ids[i]) :] = 1
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if temperature > 0
            else {"do_sample": False}
        )
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            use_cache=True,
            **sampling,
        )[:, width:]
        for row, i in enumerate(batch):
            tokens = output[row].tolist()
            stopped = eos_id in tokens
            tokens = tokens[: tokens.index(eos_id) + 1] if stopped else tokens
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            samples[i] = Sample(prompt_ids[i], tokens, text, stopped)
    torch.set_rng_state(generator_state)
    model.train(was_training)
    return samples

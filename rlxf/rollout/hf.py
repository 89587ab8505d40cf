"""Generation with a live transformers model: batched, KV-cached, left-padded.

The engine samples from the policy's own weights (no copy), so after each optimizer step
the next rollout already uses the updated policy.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from rlxf.data.records import Message
from rlxf.data.templating import ChatEncoder
from rlxf.parallel.weight_broadcast import receive
from rlxf.rollout.base import Rollout, SamplingParams
from rlxf.rollout.cpu_decode import decode_linears, growing_cache


class _SampleByInverseCdf:
    """Draws each row's next token from softmax(scores / T), truncated to the top-p nucleus.

    ``torch.multinomial`` draws one exponential variate per vocabulary entry, which costs
    more than a whole transformer layer per decode step on a CPU (about 18 ms at 16 rows x
    49k tokens); one uniform per row on the cumulative distribution draws from the same
    distribution in about a fifth of that, softmax included (``python bench/hf_generation.py``).
    Temperature and nucleus (top-p) truncation follow Holtzman et al., "The Curious Case of
    Neural Text Degeneration" (2020).
    """

    def __init__(self, temperature: float, top_p: float, generators: list[torch.Generator] | None = None):
        self.temperature, self.top_p, self.generators = temperature, top_p, generators

    def draw(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) token ids and (B,) their log-probs under softmax(scores / T)."""
        logp = (scores.float() / self.temperature).log_softmax(-1)
        probs = logp.exp().double()  # float64: exact tails in the cumulative sum
        order = None
        if self.top_p < 1.0:
            probs, order = probs.sort(-1, descending=True)
            probs = probs * ((probs.cumsum(-1) - probs) < self.top_p)  # the smallest head holding top_p
        cdf = probs.cumsum(-1)
        draw = self._uniforms(len(cdf), cdf.device) * cdf[:, -1:]
        picks = torch.searchsorted(cdf, draw, right=True).clamp_(max=cdf.shape[1] - 1)
        if order is not None:
            picks = order.gather(1, picks)
        return picks.squeeze(1), logp.gather(1, picks).squeeze(1)

    def keep(self, rows: torch.Tensor) -> None:
        """Only these rows go on (the others finished): their generators stay with them."""
        if self.generators is not None:
            self.generators = [self.generators[i] for i in rows.tolist()]

    def _uniforms(self, rows: int, device) -> torch.Tensor:
        """(rows, 1) uniforms in [0, 1): from each row's own generator when given, so a row's
        samples do not depend on which other rows share its batch."""
        if self.generators is None:
            return torch.rand(rows, 1, dtype=torch.float64, device=device)
        return torch.cat([torch.rand(1, 1, dtype=torch.float64, generator=g) for g in self.generators]).to(device)


def _greedy(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    picks = scores.argmax(-1)
    return picks, scores.float().log_softmax(-1).gather(1, picks[:, None]).squeeze(1)


class ChatEngine(ABC):
    """What every engine shares: chat prompts to token ids, completions cut at their end, and the
    rollout assembled. Subclasses draw the tokens (``_sample``)."""

    def __init__(self, encoder: ChatEncoder):
        self.encoder, self.tokenizer = encoder, encoder.tokenizer

    def prompt_ids(self, prompt: list[Message]) -> list[int]:
        encoder = self.encoder
        return encoder.prefix + encoder._ids(encoder.prompt_text(prompt))[-encoder.max_prompt_length :]

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[list[Message]], sampling: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> Rollout:
        """``seeds`` (one per prompt) make each prompt's samples reproducible on their own,
        whatever else is in the batch; without them sampling draws from torch's global generator."""
        started = time.perf_counter()
        encoded = [self.prompt_ids(p) for p in prompts]
        index = [i for i in range(len(prompts)) for _ in range(sampling.n)]
        completions, logprob_rows = self._sample(encoded, index, sampling, seeds)
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

    @abstractmethod
    def _sample(self, encoded: list[list[int]], index: list[int], sampling: SamplingParams, seeds):
        """Token ids and their log-probs for every row (row p samples prompt ``index[p]``)."""


LAY_OUT_MIN_NEW_TOKENS = 8
"""Generations this long or longer lay the weights out for decoding (see ``decode_linears``)."""


class HFEngine(ChatEngine):
    """A transformers model on the live policy (no weight copies), decoded by the engine's own loop."""

    def __init__(self, model: nn.Module, encoder: ChatEncoder, *, batch_size: int = 32):
        super().__init__(encoder)
        self.model, self.batch_size = model, batch_size

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """A copy of the policy (a rollout worker's) takes the trainer's trainable weights."""
        from rlxf.models.state import load_trainable_state

        load_trainable_state(self.model, state)

    def receive_weights(self, group, sent) -> None:
        """The trainer's broadcast of its trainable weights, straight into this model's parameters."""
        receive(group, dict(self.model.named_parameters()), sent)

    def _sample(self, encoded, index, sampling: SamplingParams, seeds):
        was_training = self.model.training
        self.model.eval()
        # laying the weights out pays for itself after a few decode steps
        lay_out = sampling.max_new_tokens >= LAY_OUT_MIN_NEW_TOKENS
        with decode_linears(self.model, rows=min(self.batch_size, len(index)), lay_out=lay_out):
            rows = self._generate_rows(encoded, index, sampling, seeds)
        self.model.train(was_training)
        return rows

    def _generate_rows(self, encoded, index, sampling: SamplingParams, seeds):
        """Token ids and log-probs of every row (sample p is sample p % n of prompt p // n)."""
        completions, logprob_rows = [], []
        for start in range(0, len(index), self.batch_size):
            rows = index[start : start + self.batch_size]
            generators = None
            if seeds is not None:
                generators = [
                    torch.Generator().manual_seed((seeds[p // sampling.n] + 7919 * (p % sampling.n)) % 2**63)
                    for p in range(start, start + len(rows))
                ]
            ids, lps = self._generate_batch([encoded[i] for i in rows], sampling, generators)
            completions += ids
            logprob_rows += lps
        return completions, logprob_rows

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingParams, generators=None):
        """Decode the rows together, KV-cached; rows that end leave the batch, so the others go on
        without carrying them (a batch ends when its longest row does)."""
        input_ids, attention = self._left_padded(prompts)
        room = sampling.max_new_tokens + 1
        cache = self._shared_prefill(prompts, input_ids, attention, room) or growing_cache(self.model.config, room)
        sampler = (
            None if sampling.temperature <= 0 else _SampleByInverseCdf(sampling.temperature, sampling.top_p, generators)
        )
        draw = _greedy if sampler is None else sampler.draw
        stop_window = max((len(stop) for stop in sampling.stop), default=0) + 8  # tokens: >= 1 character each

        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        rows = torch.arange(len(prompts))  # the prompt row of each row still decoding
        cached = cache.get_seq_length()  # the shared prefill leaves each prompt's last token to feed
        step_ids, step_positions = input_ids[:, cached:], ((attention.cumsum(-1) - 1).clamp(min=0))[:, cached:]
        for _ in range(sampling.max_new_tokens):
            logits = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            picks, picked_logprobs = draw(logits)
            going = []
            for place, (row, token, logprob) in enumerate(zip(rows.tolist(), picks.tolist(), picked_logprobs.tolist())):
                tokens[row].append(token)
                logprobs[row].append(logprob)
                if token != self.tokenizer.eos_token_id and not self._stopped(tokens[row], sampling.stop, stop_window):
                    going.append(place)
            if not going:
                break
            attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
            step_ids, step_positions = picks[:, None], step_positions[:, -1:] + 1
            if len(going) < len(rows):  # rows that ended leave the batch, its cache and the sampler
                keep = torch.tensor(going)
                rows, attention, step_ids, step_positions = (
                    t[keep.to(t.device)] for t in (rows, attention, step_ids, step_positions)
                )
                cache.batch_select_indices(keep.to(attention.device))
                if sampler is not None:
                    sampler.keep(keep)
        return tokens, logprobs

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W) token ids and attention mask on the model's device, prompts aligned on the right."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        return input_ids.to(self.model.device), attention.to(self.model.device)

    def _stopped(self, tokens: list[int], stops: Sequence[str], window: int) -> bool:
        if not stops:
            return False
        text = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(stop in text for stop in stops)

    def _shared_prefill(self, prompts: list[list[int]], input_ids: torch.Tensor, attention: torch.Tensor, room: int):
        """KV cache of every prompt token but the last, computed once per distinct prompt.

        With n samples per prompt the rows repeat their prompt; running it once and copying
        its keys and values to the n rows saves (n - 1) / n of the prefill, which at short
        completions is a large share of generation. ``generate`` then feeds the last prompt
        token and decodes as usual. None when no prompt repeats.
        """
        first_row: dict[tuple[int, ...], int] = {}
        for row, prompt in enumerate(prompts):
            first_row.setdefault(tuple(prompt), row)
        if len(first_row) == len(prompts) or input_ids.shape[1] < 2:
            return None
        distinct = torch.tensor(list(first_row.values()), device=input_ids.device)
        ids, mask = input_ids[distinct, :-1], attention[distinct, :-1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = growing_cache(self.model.config, room)
        self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        slot = {key: i for i, key in enumerate(first_row)}
        cache.batch_select_indices(torch.tensor([slot[tuple(prompt)] for prompt in prompts], device=input_ids.device))
        return cache


def load_engine(
    model: str,
    *,
    max_prompt_length: int = 2048,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    dtype: str = "float32",
    seed: int = 0,
) -> HFEngine:
    """An engine on a model loaded by name (embedded name, folder or hub id) that answers chats:
    what judges, critics and rewriters generate with."""
    from rlxf.models import load_causal_lm, load_tokenizer
    from rlxf.models.packing import use_packed_attention

    loaded = load_causal_lm(model, dtype=dtype, seed=seed).eval().requires_grad_(False)
    use_packed_attention(loaded)
    encoder = ChatEncoder(
        load_tokenizer(model), max_length=max_prompt_length + max_new_tokens, max_prompt_length=max_prompt_length
    )
    return HFEngine(loaded, encoder, batch_size=batch_size)

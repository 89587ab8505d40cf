"""Log-probabilities of completion tokens and scalar rewards, computed economically.

The language-model head is applied only at positions that predict completion
tokens, in chunks, with a hand-written backward that needs no (tokens x vocabulary)
log-softmax matrix: it reuses the forward's softmax while it is small and
recomputes each chunk's beyond that. With a 49k vocabulary this bounds the memory
of a naive ``log_softmax(logits)`` and saves a fifth of its compute (prompt
positions are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlxf.data.batching import TokenBatch, pad
from rlxf.models.lora import unwrap
from rlxf.models.packing import uses_packed_attention

KEEP_PROBS_BYTES = 256 * 2**20
"""Softmax chunks up to this size per call are kept from forward for backward instead of recomputed."""


class _ChunkedTokenLogps(torch.autograd.Function):
    """log softmax((h W^T + b) / T)[target] per row, chunk by chunk.

    Each chunk's softmax is computed in place in its logits buffer (fresh large buffers cost
    more to fault in than to compute on); backward reuses it while the kept chunks fit in
    ``KEEP_PROBS_BYTES`` and recomputes the rest from the saved log-normalizers.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int, temperature):
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 models: softmax in fp32
        token_logps = hidden.new_empty(hidden.shape[0], dtype=dtype)
        logsumexp = hidden.new_empty(hidden.shape[0], dtype=dtype)
        budget = KEEP_PROBS_BYTES if any(ctx.needs_input_grad[:3]) else 0
        ctx.kept = []
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = _logits(hidden[rows], weight, bias, temperature)
            target_logits = logits.gather(1, targets[rows, None]).squeeze(1)
            peak = logits.amax(-1, keepdim=True)
            exps = logits.sub_(peak).exp_()  # in place: the buffer now holds exp(z - max)
            total = exps.sum(-1, keepdim=True)
            logsumexp[rows] = (peak + total.log()).squeeze(1)
            token_logps[rows] = target_logits - logsumexp[rows]
            size = exps.numel() * exps.element_size()
            if size <= budget and len(ctx.kept) == start // chunk:
                budget -= size
                ctx.kept.append(exps.div_(total))  # softmax
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
        ctx.chunk, ctx.temperature = chunk, temperature
        return token_logps

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        kept, ctx.kept = ctx.kept, []  # used up in place below: a second backward recomputes
        grad_h = torch.empty_like(hidden) if need_h else None
        # accumulate the head's gradient in fp32 even for bf16/fp16 weights
        w_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_w = grad_b = None
        for index, start in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            rows = slice(start, start + ctx.chunk)
            if index < len(kept):
                probs = kept[index]
            else:
                probs = _logits(hidden[rows], weight, bias, ctx.temperature).sub_(logsumexp[rows, None]).exp_()
            # d logp[target] / d logits = (onehot(target) - softmax(logits / T)) / T
            scaled_grad = grad_out[rows, None] / ctx.temperature
            grad_logits = probs.mul_(-scaled_grad)
            grad_logits.scatter_add_(1, targets[rows, None], scaled_grad)
            grad_logits = grad_logits.to(hidden.dtype)
            if need_h:
                grad_h[rows] = grad_logits @ weight
            if need_w:
                a, b = grad_logits.T.to(w_dtype), hidden[rows].to(w_dtype)
                grad_w = torch.mm(a, b) if grad_w is None else grad_w.addmm_(a, b)
            if need_b:
                chunk_sum = grad_logits.sum(0, dtype=w_dtype)
                grad_b = chunk_sum if grad_b is None else grad_b.add_(chunk_sum)
        if need_w:
            grad_w = (grad_w if grad_w is not None else torch.zeros_like(weight)).to(weight.dtype)
        if need_b:
            grad_b = (grad_b if grad_b is not None else torch.zeros_like(bias)).to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float = 1.0) -> Tensor:
    """(h W^T + b) / T in float32 or wider: the temperature divides the logits, bias included."""
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits.div_(temperature) if temperature != 1.0 else logits


def token_logps_from_hidden(
    hidden: Tensor, head: nn.Linear, targets: Tensor, *, chunk: int = 512, temperature: float = 1.0
) -> Tensor:
    """log softmax(head(hidden_i) / T)[target_i] for each row i of hidden (N, H) -> (N,)."""
    return _ChunkedTokenLogps.apply(hidden, head.weight, head.bias, targets, chunk, temperature)


def has_plain_head(model: nn.Module) -> bool:
    config = model.config
    return not getattr(config, "final_logit_softcapping", None) and not getattr(config, "logit_scale", None)


def hidden_states(model: nn.Module, batch: TokenBatch) -> Tensor:
    """Last hidden states of a causal LM's backbone (R, T, H), before the output head."""
    base = unwrap(model)
    backbone = getattr(base, base.base_model_prefix)
    batch = batch.to(base.device)
    return backbone(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **batch.attention_kwargs(),
    ).last_hidden_state


@dataclass
class TokenLogps:
    """Log-probs of the completion tokens of a batch, flat in batch order."""

    values: Tensor  # (N,) log π(y_t | x, y_<t)
    owner: Tensor  # (N,) the sequence each token belongs to
    num_sequences: int
    entropy: Tensor | None = None  # (N,) entropy of π(·| x, y_<t), when asked for

    def per_sequence(self, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sums over each sequence's tokens (S,) and token counts (S,)."""
        values = self.values if values is None else values
        sums = values.new_zeros(self.num_sequences).index_add(0, self.owner, values)
        return sums, torch.bincount(self.owner, minlength=self.num_sequences)

    def as_matrix(self, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(S, T) right-padded per-token values and their 0/1 mask (tokens keep their order)."""
        values = self.values if values is None else values
        counts = torch.bincount(self.owner, minlength=self.num_sequences)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.arange(len(self.owner)) - starts[self.owner]
        width = int(counts.max()) if len(counts) else 0
        matrix = values.new_zeros(self.num_sequences, width)
        matrix = matrix.index_put((self.owner, position), values)
        mask = torch.zeros(self.num_sequences, width, dtype=values.dtype)
        mask[self.owner, position] = 1
        return matrix, mask


def token_logps(
    model: nn.Module, batch: TokenBatch, *, temperature: float = 1.0, with_entropy: bool = False, chunk: int = 512
) -> TokenLogps:
    """Log-probs (and optionally entropies) of every completion token, under softmax(logits / temperature).

    The owners of packed sequences must be sorted (they are, from :mod:`rlxf.data.batching`).
    """
    base = unwrap(model)
    if batch.segments is not None and not uses_packed_attention(base):
        raise ValueError("packed batches need packed attention: call rlxf.models.packing.use_packed_attention(model)")
    # the model's device computes; per-token results come back to the batch's device (the CPU),
    # where the losses are taken (gradients flow back across)
    home, on_model = batch.score_owner.device, batch.to(base.device)
    if has_plain_head(base) and not with_entropy:
        hidden = hidden_states(model, on_model).flatten(0, 1)[on_model.score_index]
        head = base.get_output_embeddings()
        values = token_logps_from_hidden(hidden, head, on_model.score_targets, chunk=chunk, temperature=temperature)
        return TokenLogps(values.to(home), batch.score_owner, batch.num_sequences)
    logits = _full_logits(model, on_model) / temperature
    logp = logits.log_softmax(-1)
    values = logp.gather(1, on_model.score_targets[:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(-1).to(home) if with_entropy else None
    return TokenLogps(values.to(home), batch.score_owner, batch.num_sequences, entropy)


def token_values(critic: nn.Module, batch: TokenBatch) -> TokenLogps:
    """A critic's value V(s_t) for the state before each completion token (scalar head on every position).

    The critic is a sequence model with a ``score`` head (as loaded by ``load_reward_model``).
    """
    base = unwrap(critic)
    on_model = batch.to(base.device)
    hidden = hidden_states(critic, on_model).flatten(0, 1)[on_model.score_index]
    values = base.score(hidden).squeeze(-1).float().to(batch.score_owner.device)
    return TokenLogps(values, batch.score_owner, batch.num_sequences)


def _full_logits(model: nn.Module, batch: TokenBatch) -> Tensor:
    base = unwrap(model)
    batch = batch.to(base.device)
    if has_plain_head(base):
        hidden = hidden_states(model, batch).flatten(0, 1)[batch.score_index]
        return base.get_output_embeddings()(hidden).float()
    output = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **batch.attention_kwargs(),
    )
    return output.logits.flatten(0, 1)[batch.score_index].float()


def completion_logps(model: nn.Module, batch: TokenBatch, *, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Per-sequence sum of log π(y_t | x, y_<t) over completion tokens, and their counts.

    Returns (logps (S,), num_tokens (S,)).
    """
    return token_logps(model, batch, chunk=chunk).per_sequence()


def reward_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scalar reward per right-padded sequence (B,).

    Decoder models are scored at their last real token; encoder models (BERT-like)
    by their own pooled classification head.
    """
    base = unwrap(model)
    home = input_ids.device
    input_ids, attention_mask = input_ids.to(base.device), attention_mask.to(base.device)
    if hasattr(base, "score"):
        hidden = getattr(base, base.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        last = attention_mask.sum(-1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return base.score(pooled).squeeze(-1).float().to(home)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float().to(home)


def preference_logits(
    model: nn.Module, first_order: list[list[int]], second_order: list[list[int]], pad_id: int
) -> Tensor:
    """z = (f(x, a, b) - f(x, b, a)) / 2 per pair (B,), f the scalar head on a pair input in each
    order (:func:`rlxf.data.pairs.pair_inputs`): antisymmetric by construction, so
    P(a ≻ b) = σ(z) = 1 - P(b ≻ a), and a pair against itself is ½ exactly."""
    batch = pad([(ids, []) for ids in [*first_order, *second_order]], pad_id)
    scores = reward_scores(model, batch.input_ids, batch.attention_mask)
    return (scores[: len(first_order)] - scores[len(first_order) :]) / 2

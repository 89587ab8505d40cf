"""Log-probabilities of completion tokens and scalar rewards, computed economically.

The language-model head is applied only at positions that predict completion
tokens, in chunks, with a hand-written backward that recomputes each chunk's
logits instead of storing a (tokens x vocabulary) matrix. With a 49k vocabulary
this is most of the memory of a naive ``log_softmax(logits)`` and a fifth of its
compute (prompt positions are skipped).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlxf.data.batching import TokenBatch
from rlxf.models.lora import unwrap
from rlxf.models.packing import uses_packed_attention


class _ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(h W^T + b)[target] per row, chunk by chunk, recomputing in backward."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int):
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 models: softmax in fp32
        token_logps = hidden.new_empty(hidden.shape[0], dtype=dtype)
        logsumexp = hidden.new_empty(hidden.shape[0], dtype=dtype)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = _logits(hidden[rows], weight, bias)
            logsumexp[rows] = torch.logsumexp(logits, dim=-1)
            token_logps[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - logsumexp[rows]
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
        ctx.chunk = chunk
        return token_logps

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        # accumulate the head's gradient in fp32 even for bf16/fp16 weights
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=grad_w.dtype if need_w else torch.float32) if need_b else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            logits = _logits(hidden[rows], weight, bias)
            # d logp[target] / d logits = onehot(target) - softmax(logits)
            grad_logits = logits.sub_(logsumexp[rows, None]).exp_().mul_(-grad_out[rows, None])  # -g·softmax
            grad_logits.scatter_add_(1, targets[rows, None], grad_out[rows, None])
            grad_logits = grad_logits.to(hidden.dtype)
            if need_h:
                grad_h[rows] = grad_logits @ weight
            if need_w:
                grad_w.addmm_(grad_logits.T.to(grad_w.dtype), hidden[rows].to(grad_w.dtype))
            if need_b:
                grad_b += grad_logits.sum(0)
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def token_logps_from_hidden(hidden: Tensor, head: nn.Linear, targets: Tensor, *, chunk: int = 512) -> Tensor:
    """log p(target_i | hidden_i) for each row i of hidden (N, H) -> (N,)."""
    return _ChunkedTokenLogps.apply(hidden, head.weight, head.bias, targets, chunk)


def has_plain_head(model: nn.Module) -> bool:
    config = model.config
    return not getattr(config, "final_logit_softcapping", None) and not getattr(config, "logit_scale", None)


def hidden_states(model: nn.Module, batch: TokenBatch) -> Tensor:
    """Last hidden states of a causal LM's backbone (R, T, H), before the output head."""
    base = unwrap(model)
    backbone = getattr(base, base.base_model_prefix)
    return backbone(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **batch.attention_kwargs(),
    ).last_hidden_state


def completion_logps(model: nn.Module, batch: TokenBatch, *, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Per-sequence sum of log π(y_t | x, y_<t) over completion tokens, and their counts.

    Returns (logps (S,), num_tokens (S,)).
    """
    base = unwrap(model)
    if batch.segments is not None and not uses_packed_attention(base):
        raise ValueError("packed batches need packed attention: call rlxf.models.packing.use_packed_attention(model)")
    if has_plain_head(base):
        hidden = hidden_states(model, batch).flatten(0, 1)[batch.score_index]
        token_logps = token_logps_from_hidden(hidden, base.get_output_embeddings(), batch.score_targets, chunk=chunk)
    else:  # heads with soft-capping or scaling: fall back to full logits
        logits = (
            model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
                **batch.attention_kwargs(),
            )
            .logits.flatten(0, 1)[batch.score_index]
            .float()
        )
        token_logps = logits.log_softmax(-1).gather(1, batch.score_targets[:, None]).squeeze(1)
    sums = token_logps.new_zeros(batch.num_sequences).index_add(0, batch.score_owner, token_logps)
    counts = torch.bincount(batch.score_owner, minlength=batch.num_sequences)
    return sums, counts


def reward_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scalar reward per right-padded sequence (B,).

    Decoder models are scored at their last real token; encoder models (BERT-like)
    by their own pooled classification head.
    """
    base = unwrap(model)
    if hasattr(base, "score"):
        hidden = getattr(base, base.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        last = attention_mask.sum(-1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return base.score(pooled).squeeze(-1).float()
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()

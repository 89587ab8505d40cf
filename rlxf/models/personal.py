"""A reward model conditioned on a user latent inferred from a few of that user's labels.

Poddar et al., "Personalizing Reinforcement Learning from Human Feedback with Variational Preference
Learning" (NeurIPS 2024): an encoder q(z | the user's labeled pairs) and a reward r(x, y, z), both on
fixed embeddings of (prompt, response). The authors attend over the context pairs with a small
transformer; rlxf mean-pools an MLP of each pair, which is what their ablation without attention does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, outputs)
    )


class VariationalPreferenceModel(nn.Module):
    def __init__(self, dim: int, latent: int = 16, hidden: int = 128):
        super().__init__()
        self.dim, self.latent = dim, latent
        self.pair_encoder = _mlp(2 * dim, hidden, hidden)
        self.to_posterior = nn.Linear(hidden, 2 * latent)
        self.reward_head = _mlp(dim + latent, hidden, 1)

    def posterior(self, chosen: Tensor, rejected: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | context): the mean of each user's encoded (chosen, rejected) pairs -> (μ, log σ²).
        chosen, rejected: (U, K, dim); mask: (U, K), 1 on the user's pairs. Returns (U, latent) twice."""
        encoded = self.pair_encoder(torch.cat([chosen, rejected], dim=-1)) * mask[..., None]
        pooled = encoded.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        mu, logvar = self.to_posterior(pooled).chunk(2, dim=-1)
        return mu, logvar.clamp(-8, 8)

    def reward(self, responses: Tensor, z: Tensor) -> Tensor:
        """r(x, y, z): responses (N, dim), z (N, latent) -> (N,)."""
        return self.reward_head(torch.cat([responses, z], dim=-1)).squeeze(-1)


@torch.no_grad()
def embed_texts(name: str, texts: list[str], *, max_length: int = 256, batch_size: int = 32) -> Tensor:
    """Fixed embeddings of ``texts``: the mean of a frozen model's last hidden states over each text's
    tokens (any scalar-head-capable backbone: an encoder such as MiniLM, or a causal LM). (N, dim)."""
    from rlxf.models.loading import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(name)
    model = load_reward_model(name, pad_token_id=tokenizer.pad_token_id).eval()
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        rows.append((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))
    return torch.cat(rows).float()

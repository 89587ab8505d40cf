"""A trained reward model (from ``rlxf rm``) as a reward source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from rlxf.config import ConfigError
from rlxf.data.batching import pad, token_budget_batches
from rlxf.data.templating import ChatEncoder
from rlxf.rewards.base import RewardBatch, single_source

_COMMAND_OF = {
    "reward_model": "rm",
    "cost_model": "cm",
    "reaction_model": "reactions",
    "fine_grained": "fgrm",
    "principle_model": "principles",
}


@dataclass
class LearnedReward:
    """Scores each (prompt, completion) with a scalar-head model, encoded as it was trained."""

    model_path: str
    max_length: int = 0
    """Input limit; 0 = as the model was trained (its rlxf.json), else 512."""
    max_tokens: int = 8192
    name: str = "reward_model"
    kind: str = "reward_model"
    """What the folder must have been saved as: reward_model (`rlxf rm`), cost_model (`rlxf cm`),
    reaction_model (`rlxf reactions`) or fine_grained (`rlxf fgrm`)."""
    probability: bool = False
    """Score σ(logit), a probability (a reaction model's P[positive]), instead of the logit."""
    _loaded: tuple = field(default=(), repr=False)

    def __post_init__(self):
        from rlxf.models.loading import saved_settings

        if Path(self.model_path).is_dir():  # the folder is already there: refuse the wrong kind now
            self._check_kind(saved_settings(self.model_path))

    def _check_kind(self, settings: dict) -> None:
        # any scalar-head folder (an older `rlxf rm`, a plain HF model) may be a reward model; the
        # other kinds must say they are what they are used as
        saved_kind = settings.get("kind", "reward_model" if self.kind == "reward_model" else "")
        if not saved_kind:
            raise ConfigError(
                f"{self.model_path} does not say it is a {self.kind.replace('_', ' ')} (its rlxf.json names no kind): "
                f"give a folder that `rlxf {_COMMAND_OF[self.kind]}` saved"
            )
        if saved_kind != self.kind:
            use = "win_rate" if saved_kind == "preference_model" else saved_kind  # a pm is SPO's oracle
            raise ConfigError(
                f"{self.model_path} is a {saved_kind.replace('_', ' ')}: use it as {{kind: {use}}}"
                + (" in safety.costs" if saved_kind == "cost_model" else " in rewards")
            )

    def load(self):
        """(model, encoder), loaded once."""
        if not self._loaded:
            from rlxf.models import load_reward_model, load_tokenizer
            from rlxf.models.loading import saved_settings

            tokenizer = load_tokenizer(self.model_path)
            model = load_reward_model(self.model_path, pad_token_id=tokenizer.pad_token_id).eval()
            settings = saved_settings(self.model_path)
            self._check_kind(settings)
            settings = settings if not self.max_length else {}
            max_length = self.max_length or settings.get("max_length", 512)
            prompt_length = settings.get("max_prompt_length", max_length * 3 // 4)
            encoder = ChatEncoder(
                tokenizer, max_length=max_length, max_prompt_length=min(prompt_length, max_length - 1)
            )
            self._loaded = (model, encoder)
        return self._loaded

    @torch.no_grad()
    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        from rlxf.models import reward_scores

        model, encoder = self.load()
        sequences = []
        for prompt, completion in zip(prompts, completions):
            encoded = encoder.encode(prompt, [completion])
            sequences.append(encoded.prompt + encoded.completions[0])
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        scores = [0.0] * len(sequences)
        for batch in token_budget_batches([len(sequences[i]) for i in order], self.max_tokens):
            rows = [order[i] for i in batch]
            padded = pad([(sequences[i], []) for i in rows], encoder.tokenizer.pad_token_id)
            for row, value in zip(rows, reward_scores(model, padded.input_ids, padded.attention_mask).tolist()):
                scores[row] = value
        if self.probability:
            scores = torch.sigmoid(torch.tensor(scores)).tolist()
        return single_source(self.name, scores)

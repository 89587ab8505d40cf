"""Models: embedded defaults, HF folders, tiny test models, LoRA, reward heads."""

from rlxf.models.loading import (
    MINILM,
    SMOLLM2,
    ModelNotFound,
    cache_dir,
    is_empty,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
)
from rlxf.models.logprobs import completion_logps, preference_logits, reward_scores
from rlxf.models.lora import apply_lora, is_lora, unwrap
from rlxf.models.tiny import TINY_LLAMA

__all__ = [
    "MINILM",
    "SMOLLM2",
    "TINY_LLAMA",
    "ModelNotFound",
    "apply_lora",
    "cache_dir",
    "completion_logps",
    "is_empty",
    "is_lora",
    "load_causal_lm",
    "load_reward_model",
    "load_tokenizer",
    "resolve_model_path",
    "preference_logits",
    "reward_scores",
    "unwrap",
]

"""Tiny randomly initialized Llama models and a byte-level chat tokenizer for tests.

They build in milliseconds from code, need no download, and exercise the same code
paths as real models (chat template, special tokens, tied embeddings, GQA).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

TINY_LLAMA = "tiny-llama"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 3 ChatML specials), no merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_SPECIAL_TOKENS,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_llama_config(vocab_size: int = 259, hidden_size: int = 64, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


RANDOM_SMOLLM2 = "random-smollm2-135m"
"""SmolLM2-135M's architecture with random weights and the byte tokenizer: real sizes, no download."""


def smollm2_135m_config() -> LlamaConfig:
    """SmolLM2-135M's shapes: 30 layers, 576 wide, 9 query / 3 key-value heads, 49,152 tokens."""
    config = tiny_llama_config(vocab_size=49152, hidden_size=576, layers=30)
    config.intermediate_size, config.num_attention_heads, config.num_key_value_heads = 1536, 9, 3
    config.head_dim = 64
    return config


RANDOM_CONFIGS = {TINY_LLAMA: tiny_llama_config, RANDOM_SMOLLM2: smollm2_135m_config}
"""Model names built from code with random weights (no download), and their configs."""


def tiny_llama(seed: int = 0, *, reward_head: bool = False, name: str = TINY_LLAMA) -> torch.nn.Module:
    """A randomly initialized Llama (2 layers, 64 wide unless ``name`` says otherwise) with a fixed
    initialization: same seed, same weights."""
    config = RANDOM_CONFIGS[name]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if reward_head:
            config.num_labels = 1
            model = LlamaForSequenceClassification(config)
        else:
            model = LlamaForCausalLM(config)
    if not reward_head:
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
    return model

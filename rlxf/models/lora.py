"""LoRA adapters through peft, for any trainable model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def lora_config(
    *, rank: int, alpha: float, dropout: float = 0.0, target_modules: str | list[str] = "all-linear", reward_head=False
):
    """peft's ``LoraConfig`` for these settings (what :func:`apply_lora` applies and an adapter
    folder's ``adapter_config.json`` records)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=TaskType.SEQ_CLS if reward_head else TaskType.CAUSAL_LM,
    )


def apply_lora(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    reward_head: bool = False,
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large
    Language Models", ICLR 2022); only adapter weights (and a reward head) train."""
    from peft import get_peft_model

    settings = dict(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules, reward_head=reward_head)
    return get_peft_model(model, lora_config(**settings))


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model (LoRA layers stay injected in it)."""
    return model.get_base_model() if is_lora(model) else model


def merged_copy_for_saving(model: nn.Module) -> nn.Module:
    """A plain transformers model with adapters merged in (the live model is left untouched)."""
    import copy

    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def merged_lora_weights(model: nn.Module) -> dict[str, Tensor]:
    """The weights LoRA changes, merged: W + ΔW for every adapted layer, under the base model's
    transformers names — what a generation engine holding the base model needs after an update.
    The model itself is left as it is (peft's ``merge_adapter`` would add ΔW in place and
    subtract it again, drifting by rounding each time)."""
    from peft.tuners.lora import LoraLayer

    merged = {}
    with torch.no_grad():
        for name, module in unwrap(model).named_modules():
            if isinstance(module, LoraLayer):
                weight = module.get_base_layer().weight
                deltas = [module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A]
                merged[f"{name}.weight"] = weight + sum(deltas) if deltas else weight
    return merged


def adapter_weights(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA weights alone, under the names an adapter folder stores them by (peft's
    ``adapter_model.safetensors``): what an engine serving the adapter on the base model needs."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach() for name, tensor in get_peft_model_state_dict(model).items()}

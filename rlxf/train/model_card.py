"""Save a trained model in Hugging Face format with a model card that records how it was made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml
from torch import nn

from rlxf.models.loading import SETTINGS_FILE
from rlxf.models.lora import is_lora, merged_copy_for_saving


def model_card(
    *,
    title: str,
    base_model: str,
    recipe: str,
    data: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
    warnings: Sequence[str] = (),
) -> str:
    front = yaml.safe_dump(
        {"library_name": "transformers", "base_model": base_model, "tags": ["rlxf", recipe]}, sort_keys=False
    )
    data_lines = "\n".join(f"- **{k}**: {v}" for k, v in data.items())
    warning_lines = "".join(f"> **Warning**: {w}\n\n" for w in warnings)
    return (
        f"---\n{front}---\n\n# {title}\n\nTrained with `rlxf {recipe}` from `{base_model}`.\n\n{warning_lines}"
        f"## Data\n\n{data_lines}\n\n"
        f"## Metrics\n\n```json\n{json.dumps(metrics, indent=2, sort_keys=True)}\n```\n\n"
        f"## Config\n\n```yaml\n{yaml.safe_dump(config, sort_keys=False)}```\n"
    )


def save_model(
    model: nn.Module, tokenizer, directory: str | Path, card: str, settings: dict[str, Any] | None = None
) -> Path:
    """safetensors weights (LoRA merged in; the adapter also kept under adapter/), tokenizer, README.md,
    and ``rlxf.json`` with the settings a later reader needs (e.g. a reward model's input length)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if settings:
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    if is_lora(model):
        model.save_pretrained(directory / "adapter")
    merged_copy_for_saving(model).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text(card, encoding="utf-8")
    return directory

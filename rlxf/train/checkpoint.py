"""Checkpoints for exact resume: trainable weights, optimizer, scheduler, RNG states, step.

Each checkpoint is written to a temporary folder and renamed into place, so a run
killed at any moment leaves either a complete checkpoint or none.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

_PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    unknown = [name for name in state if name not in params]
    if missing or unknown:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:3]}, unknown {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def save_checkpoint(
    root: Path, step: int, model: nn.Module, optimizer, scheduler, extra: dict[str, Any], keep: int
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    save_file(trainable_state(model), staging / "trainable.safetensors")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "step": step,
            **extra,
        },
        staging / "state.pt",
    )
    target = root / f"{_PREFIX}{step:07d}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "state.pt").exists())


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore everything saved at ``path``; returns the state dict (step and extras)."""
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state

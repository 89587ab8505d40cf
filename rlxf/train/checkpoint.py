"""Checkpoints for exact resume: trainable weights, optimizer, scheduler, RNG states, step; and
beside them the model in Hugging Face format (or its LoRA adapter), for ``from_pretrained``.

Each checkpoint is written to a temporary folder and renamed into place, so a run
killed at any moment leaves either a complete checkpoint or none.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlxf.models.state import load_trainable_state
from rlxf.parallel.distributed import laid_out_like

_PREFIX = "checkpoint-"
_OLD_PREFIX = "step-"  # folders of earlier versions, still resumed from
_SIDE = "side-"  # side files: tensors a loop resumes from (see Run.save_with_checkpoint)


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


def save_checkpoint(
    root: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler,
    extra: dict[str, Any],
    keep: int,
    side_files: dict[str, dict[str, torch.Tensor]] | None = None,
    export: Callable[[Path], None] | None = None,
) -> Path:
    """``trainable`` and ``optimizer_state`` whole (see :func:`rlxf.parallel.distributed.gathered`),
    so a checkpoint resumes on any number of ranks, sharded or not. ``side_files``: more tensors a loop resumes from,
    one safetensors file per name. ``export(folder)`` writes the model in Hugging Face format there."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    save_file(trainable, staging / "trainable.safetensors")
    for name, tensors in (side_files or {}).items():
        save_file(
            {key: t.detach().cpu().contiguous() for key, t in tensors.items()}, staging / f"{_SIDE}{name}.safetensors"
        )
    torch.save(
        {
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "step": step,
            **extra,
        },
        staging / "state.pt",
    )
    if export is not None:
        export(staging)
    target = root / f"{_PREFIX}{step}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_side_files(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The side files saved with the checkpoint at ``path``, by name."""
    return {
        file.name[len(_SIDE) : -len(".safetensors")]: load_file(file) for file in path.glob(f"{_SIDE}*.safetensors")
    }


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step, not by name: checkpoint-10 after checkpoint-9)."""
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if _step_of(p) is not None and (p / "state.pt").exists()]
    return sorted(found, key=_step_of)


def _step_of(path: Path) -> int | None:
    for prefix in (_PREFIX, _OLD_PREFIX):
        if path.name.startswith(prefix) and path.name[len(prefix) :].isdigit():
            return int(path.name[len(prefix) :])
    return None


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _optimizer_state_like_params(saved: dict[str, Any], optimizer) -> dict[str, Any]:
    """Saved (whole) per-parameter optimizer tensors laid out as their parameters: sharded ones
    become this rank's shards."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        index: {
            key: laid_out_like(params[index], value)
            if torch.is_tensor(value) and value.shape == params[index].shape
            else value
            for key, value in entry.items()
        }
        for index, entry in saved["state"].items()
    }
    return {**saved, "state": state}


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore everything saved at ``path``; returns the state dict (step and extras)."""
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(_optimizer_state_like_params(state["optimizer"], optimizer))
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state

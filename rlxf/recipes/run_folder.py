"""Where a run writes, and whether it may continue what a folder already holds: a run with
another config there stops with the fields that differ, unless ``train.resume`` says otherwise
(``never``: start fresh in a new subfolder; ``force``: continue anyway)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from rlxf.config import ConfigError, to_yaml
from rlxf.parallel import distributed
from rlxf.train.run import PENDING_CONFIG

log = logging.getLogger(__name__)

HOW_NOT_WHAT = (
    "output_dir", "train.resume", "train.resume_from", "train.threads", "train.log_every", "train.eval_every",
    "train.save_every", "train.keep_checkpoints", "train.profile_step", "distributed.",
)  # fmt: skip
"""Fields (or sections, ending in a dot) that say where and how a run goes on, not what it trains:
they may differ on resume (a checkpoint resumes on any number of ranks, sharded or not)."""


def holds_run(folder: Path) -> bool:
    """A finished or partial run: its config and something it trained or logged."""
    trained = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
    return (folder / "config.yaml").is_file() and (
        trained or (folder / "model").is_dir() or (folder / "metrics.jsonl").is_file()
    )


def prepare_output_dir(config: Any) -> Path:
    """The folder this run writes to (``config.output_dir`` is set to it), with its config.yaml
    written where the run is new or told to go on anyway; decided by the main rank for all."""
    folder = Path(distributed.from_main(str(_choose(config)) if distributed.is_main() else None))
    config.output_dir = str(folder)
    if distributed.is_main():
        folder.mkdir(parents=True, exist_ok=True)
        if not holds_run(folder):
            (folder / "config.yaml").write_text(to_yaml(config), encoding="utf-8")
        elif config.train.resume == "force":  # config.yaml changes only once a step trains
            (folder / PENDING_CONFIG).write_text(to_yaml(config), encoding="utf-8")
    return folder


def _choose(config: Any) -> Path:
    root, mode = Path(config.output_dir), config.train.resume
    if not holds_run(root):
        return root
    if mode == "never":
        fresh = next(root / f"run-{n}" for n in range(2, 10_000) if not (root / f"run-{n}").exists())
        log.info("%s holds a run; starting fresh in %s (train.resume=never)", root, fresh)
        return fresh
    changed = differences(yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}, config)
    if changed and mode == "force":
        log.warning("continuing the run in %s with a changed config (train.resume=force): %s", root, changed)
    elif changed:
        raise ConfigError(
            f"{root} holds a run with another config ({changed}); use train.resume=never to start fresh in a "
            "subfolder, train.resume=force to continue it anyway, or another output_dir"
        )
    return root


def differences(saved: dict, config: Any) -> str:
    """``field: old → new`` for every training field that differs from the saved config."""
    now = yaml.safe_load(to_yaml(config))
    old, new = _flat(saved), _flat(now)
    keys = sorted(
        k for k in set(old) | set(new) if not any(k == h or (h.endswith(".") and k.startswith(h)) for h in HOW_NOT_WHAT)
    )
    return ", ".join(
        f"{k}: {old.get(k, '(unset)')} → {new.get(k, '(unset)')}" for k in keys if old.get(k) != new.get(k)
    )


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "loss_options":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat

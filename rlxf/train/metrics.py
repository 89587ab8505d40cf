"""Metrics to a JSONL file and TensorBoard; on resume, entries past the checkpoint are dropped."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _decoded(lines: list[str]) -> list[dict[str, Any]]:
    """JSON lines, leaving out a last line torn by a killed process."""
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Written by the main rank only; other ranks hold a log that writes nothing."""

    def __init__(self, output_dir: Path, *, resume_step: int = 0, enabled: bool = True):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():
            kept = [row for row in _decoded(self.path.read_text().splitlines()) if row.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        elif self.path.exists():
            self.path.unlink()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(output_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
        )

    def write(self, step: int, metrics: dict[str, Any], *, split: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **metrics}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = _decoded(path.read_text().splitlines())
    return [r for r in rows if split is None or r.get("split") == split]

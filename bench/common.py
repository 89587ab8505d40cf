"""What the trainer-vs-trainer benchmarks share: one process per run, its peak RSS, medians."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys

WARMUP = 2
"""Steps left out of the median (allocator and kernel warm-up)."""

TRL_CPU_FP32 = dict(
    lr_scheduler_type="constant",
    warmup_steps=0,
    max_grad_norm=1.0,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    fp16=False,
    dataloader_num_workers=0,
    seed=0,
)
"""TRL trainer arguments both benchmarks share: fp32 on CPU, constant LR, no saving, log every step."""


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def report(result: dict) -> None:
    """A worker's last line: its result as JSON, read back by :func:`launch`."""
    print("RESULT " + json.dumps(result))


def launch(script: str, kind: str, *args: str) -> dict:
    """Run ``script --worker kind ...`` in a fresh process, so peak RSS is that run's alone."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, script, "--worker", kind, *args], capture_output=True, text=True, env=env, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def median_step(result: dict) -> float:
    return statistics.median(result["step_seconds"][WARMUP:])

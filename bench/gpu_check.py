"""A few DPO and GRPO steps on whatever device this machine has, with a model that needs no download.

The model is SmolLM2-135M's architecture with random weights (``random-smollm2-135m``) and
the byte tokenizer, so nothing is fetched; the DPO data is the shipped HH-RLHF sample and the
GRPO reward a digit rule (no extra packages). Prints, per run, training tokens per second
(an online step's time less its generation), generation tokens per second, and the model FLOPs
utilization of training (6 x parameters x training tokens/s over the device's peak), and writes
them to ``--out``/gpu_check.json.

    python bench/gpu_check.py --out runs/gpu_check          # bench/gpu_check.sh wraps it
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"H100": {"float32": 67.0, "bfloat16": 989.0}, "H200": {"float32": 67.0, "bfloat16": 989.0}}
"""Dense peak of the SXM parts (TF32 tensor cores would give 495 for float32 matmuls)."""


def rlxf(command: str, *overrides: str, launcher: tuple[str, ...] = ("-m",)) -> bool:
    """Runs one rlxf command; on failure prints its error and returns False, so the other runs still report."""
    argv = [sys.executable, *launcher, "rlxf.cli", command, *overrides]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    print(f"{command}: exit {done.returncode} after {time.perf_counter() - started:.0f} s")
    if done.returncode:
        print(f"{' '.join(argv)} failed:\n{done.stderr[-4000:]}")
    return done.returncode == 0


def steady(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows[1:] if key in r] or [r[key] for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def train_rows(output_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    parser.add_argument("--model", default="random-smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    import torch

    from rlxf.models.loading import load_causal_lm
    from rlxf.parallel.distributed import default_device

    device = default_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    params = sum(p.numel() for p in load_causal_lm(args.model).parameters())
    peak = next((v.get(args.dtype) for k, v in PEAK_TFLOPS.items() if k in name), None)
    print(f"device {device} ({name}), torch {torch.__version__}, {args.model}: {params / 1e6:.1f}M parameters")

    common = [f"policy.name={args.model}", f"policy.dtype={args.dtype}", f"train.max_steps={args.steps}"]
    dpo = [
        f"data.path={ROOT / 'data' / 'hh_rlhf_harmless_demo.jsonl'}",
        f"data.limit={args.batch * args.steps + 32}",
        "data.on_bad_row=skip",
        "data.max_length=512",
        "data.max_prompt_length=256",
        f"train.batch_size={args.batch}",
    ]
    grpo = [
        "task.name=arithmetic",
        "task.eval_count=0",
        "rewards=[{kind: format, pattern: '[0-9]'}]",
        "sampling.n=8",  # samples_per_step below
        "sampling.max_new_tokens=128",
        f"train.batch_size={args.batch}",
    ]
    ranks = torch.cuda.device_count() if device.type == "cuda" else 0
    # With several GPUs, the same DPO run under torchrun, one rank per GPU (NCCL).
    torchrun = ("-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m")
    runs = {
        "dpo": ("dpo", dpo, ("-m",)),
        "grpo": ("grpo", grpo, ("-m",)),
        **({f"dpo_torchrun_{ranks}": ("dpo", dpo, torchrun)} if ranks > 1 else {}),
    }
    started = time.perf_counter()
    report = {"device": name, "model": args.model, "parameters": params, "dtype": args.dtype}
    samples_per_step = args.batch * 8
    for run, (command, overrides, launcher) in runs.items():
        if not rlxf(command, *common, *overrides, f"output_dir={args.out / run}", launcher=launcher):
            report[f"{run}/failed"] = True
            continue
        rows = train_rows(args.out / run)
        for row in rows:  # training alone: an online step's time less its generation
            generating = 0.0
            if "generate_tokens_per_second" in row:
                generating = row["response_length"] * samples_per_step / row["generate_tokens_per_second"]
            row["train_tokens_per_second"] = row["tokens"] / (row["step_seconds"] - generating)
        for key in ("loss", "step_seconds", "train_tokens_per_second", "generate_tokens_per_second"):
            if key in rows[0]:
                report[f"{run}/{key}"] = steady(rows, key)
        achieved = 6 * params * report[f"{run}/train_tokens_per_second"] / 1e12
        report[f"{run}/train_tflops"] = achieved
        report[f"{run}/mfu"] = achieved / peak if peak else None
    report["seconds"] = time.perf_counter() - started
    for key, value in report.items():
        print(f"{key:32} {value:.4g}" if isinstance(value, float) else f"{key:32} {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

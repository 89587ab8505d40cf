"""Data-parallel scaling on this machine: the same DPO and GRPO runs on 1 and on 2 ranks.

Each run goes through the CLI (``torchrun --nproc_per_node 2 -m rlxf.cli ...`` for two ranks),
with the same global batch, so both do the same work; the cores are split between the ranks.

    python bench/scaling.py --steps 6

Prints median seconds per step (the first two left out) and the speed-up; writes
bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import WARMUP

ROOT = Path(__file__).resolve().parents[1]

RUNS = {
    "dpo": [
        "dpo",
        "policy.name=smollm2-135m-instruct",
        "data.path={pairs}",
        "data.max_length=256",
        "data.max_prompt_length=96",
        "data.eval_fraction=0.1",
        "train.batch_size=8",
        "train.micro_batch_size=2",
        "train.lr=1e-6",
        "train.scheduler=constant",
    ],
    "grpo": [
        "grpo",
        "policy.name=smollm2-135m-instruct",
        "task.name=arithmetic",
        "task.eval_count=0",
        "sampling.n=4",
        "sampling.max_new_tokens=32",
        "train.batch_size=4",
        "train.lr=1e-6",
        "train.scheduler=constant",
    ],
}


def run(ranks: int, argv: list[str], steps: int, output_dir: Path) -> list[float]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m"]
    command = [*(launcher if ranks > 1 else [sys.executable, "-m"]), "rlxf.cli", *argv]
    command += [f"output_dir={output_dir}", f"train.max_steps={steps}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step_seconds"] for r in rows if r["split"] == "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", default="dpo,grpo")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"  # enough shipped HH pairs for the steps (reference log-probs stay cheap)
        lines = (ROOT / "data" / "hh_rlhf_harmless_demo.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        pairs.write_text("".join(lines[: 8 * args.steps + 16]), encoding="utf-8")
        for name in args.runs.split(","):
            for ranks in (1, 2):
                argv = [arg.format(pairs=pairs) for arg in RUNS[name]]
                seconds = run(ranks, argv, args.steps, Path(tmp) / f"{name}-{ranks}")
                results[f"{name}/{ranks}"] = {"step_seconds": seconds, "median": statistics.median(seconds[WARMUP:])}
    print(f"{'run':8} {'1 rank s/step':>14} {'2 ranks s/step':>15} {'speed-up':>9}")
    for name in args.runs.split(","):
        one, two = results[f"{name}/1"]["median"], results[f"{name}/2"]["median"]
        print(f"{name:8} {one:14.2f} {two:15.2f} {one / two:9.2f}")
    out = ROOT / "bench" / "results" / "scaling.json"
    out.write_text(json.dumps({"results": results, "command": " ".join(sys.argv)}, indent=2) + "\n")


if __name__ == "__main__":
    main()

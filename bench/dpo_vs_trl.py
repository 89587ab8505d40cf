"""DPO speed and memory: rlxf vs TRL's DPOTrainer on identical data, model and batches.

Same pairs (HH-RLHF harmless, shipped), same order (no shuffling), SmolLM2-135M-Instruct,
full fine-tune in fp32, batch of 4 pairs, max length 1024 (no pair is truncated),
β 0.1, lr 2e-5. Each trainer runs in its own process so peak RSS is its own.

    python bench/dpo_vs_trl.py --steps 12            # needs `pip install -e '.[bench]'`

Prints median seconds per step (first two steps are warm-up and left out), peak RSS,
and the per-step losses of each run side by side; writes bench/results/dpo_vs_trl.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import TRL_CPU_FP32, WARMUP, launch, median_step, peak_rss_gib, report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "hh_rlhf_harmless_demo.jsonl"
BATCH, MAX_LENGTH, BETA, LR = 4, 1024, 0.1, 2e-5


def select_pairs(count: int, path: Path) -> dict:
    """The first `count` pairs in file order that fit MAX_LENGTH, in TRL's conversational layout."""
    from rlxf.data import ChatEncoder, read_preferences
    from rlxf.models import SMOLLM2, load_tokenizer

    encoder = ChatEncoder(load_tokenizer(SMOLLM2), max_length=MAX_LENGTH, max_prompt_length=MAX_LENGTH - 1)
    pairs, _ = read_preferences(DATA, on_bad_row="skip")
    rows, tokens = [], []
    for pair in pairs:
        encoded = encoder.encode(pair.prompt, [pair.chosen, pair.rejected])
        lengths = [len(encoded.prompt) + len(c) for c in encoded.completions]
        if max(lengths) >= MAX_LENGTH or pair.tie:
            continue
        rows.append(
            {
                "prompt": pair.prompt,
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}],
            }
        )
        tokens += lengths
        if len(rows) == count:
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"pairs": len(rows), "mean_tokens_per_sequence": statistics.mean(tokens)}


def run_rlxf(data: Path, steps: int, workdir: Path) -> dict:
    from rlxf.config import load_config
    from rlxf.recipes.dpo import DPOConfig, train_dpo
    from rlxf.train.metrics import read_metrics

    started = time.perf_counter()
    config = load_config(
        DPOConfig,
        None,
        [
            f"output_dir={workdir}",
            f"data.path={data}",
            "data.eval_fraction=0",
            f"data.max_length={MAX_LENGTH}",
            f"data.max_prompt_length={MAX_LENGTH - 1}",
            f"train.max_steps={steps}",
            f"train.batch_size={BATCH}",
            f"train.lr={LR}",
            f"beta={BETA}",
            "train.shuffle=false",
            "train.scheduler=constant",
            "train.max_grad_norm=1.0",
        ],
    )
    train_dpo(config)
    rows = read_metrics(workdir / "metrics.jsonl", "train")
    total = time.perf_counter() - started
    return {
        "step_seconds": [r["step_seconds"] for r in rows],
        "losses": [r["loss"] for r in rows],
        "total_seconds": total,
        "peak_rss_gib": peak_rss_gib(),
    }


def run_trl(data: Path, steps: int, workdir: Path, fast: bool) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rlxf.models import SMOLLM2, resolve_model_path

    started = time.perf_counter()
    folder = resolve_model_path(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    step_seconds = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds.append(time.perf_counter() - self.started)

    args = DPOConfig(
        **TRL_CPU_FP32,
        output_dir=str(workdir),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        beta=BETA,
        max_length=MAX_LENGTH,
        train_sampling_strategy="sequential",
        gradient_checkpointing=not fast,
        precompute_ref_log_probs=fast,
    )
    dataset = load_dataset("json", data_files=str(data), split="train")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        "step_seconds": step_seconds,
        "losses": losses,
        "total_seconds": time.perf_counter() - started,
        "peak_rss_gib": peak_rss_gib(),
        "trl_version": __import__("trl").__version__,
    }


def worker(kind: str, data: Path, steps: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        result = (
            run_rlxf(data, steps, Path(workdir))
            if kind == "rlxf"
            else run_trl(data, steps, Path(workdir), fast=kind == "trl-fast")
        )
    report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--runs", default="rlxf,trl,trl-fast", help="comma-separated: rlxf, trl, trl-fast")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dpo_vs_trl.json")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.steps)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        selection = select_pairs(args.steps * BATCH, data)
        results = {
            kind: launch(__file__, kind, "--data", str(data), "--steps", str(args.steps))
            for kind in args.runs.split(",")
        }
    print(
        f"{selection['pairs']} pairs, {selection['mean_tokens_per_sequence']:.0f} tokens per sequence on average; "
        f"batch {BATCH} pairs; {args.steps} steps (median over steps {WARMUP + 1}..{args.steps})"
    )
    print(f"{'run':10} {'s/step':>8} {'peak RSS GiB':>13} {'total s':>8}")
    for kind, result in results.items():
        print(f"{kind:10} {median_step(result):8.2f} {result['peak_rss_gib']:13.2f} {result['total_seconds']:8.1f}")
    if "rlxf" in results:
        for kind in results.keys() - {"rlxf"}:
            speedup = median_step(results[kind]) / median_step(results["rlxf"])
            gap = max(abs(a - b) for a, b in zip(results["rlxf"]["losses"], results[kind]["losses"]))
            print(f"rlxf is {speedup:.2f}x faster per step than {kind}; largest per-step loss difference {gap:.4f}")
    print("losses per step:")
    for step in range(args.steps):
        print(
            f"  {step + 1:3d} "
            + " ".join(f"{k}={r['losses'][step]:.4f}" for k, r in results.items() if step < len(r["losses"]))
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"selection": selection, "results": results, "command": " ".join(sys.argv)}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

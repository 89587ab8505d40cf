"""GRPO speed and memory: rlxf vs TRL's GRPOTrainer on identical settings.

SmolLM2-135M-Instruct, full fine-tune in fp32, 4 prompts x 4 samples per step, temperature
1, no KL (TRL's default β = 0), token-mean loss (TRL's default "dapo"), lr 1e-6, the same
two-digit addition prompts in the same order and the same reward (rlxf's math-verify
verifier). Each trainer runs in its own process so peak RSS is its own.

    python bench/grpo_vs_trl.py --tokens 32 --steps 8      # needs `pip install -e '.[bench]'`
    python bench/grpo_vs_trl.py --tokens 128 --steps 6

Prints median seconds per step (the first two left out), samples per second, mean
completion length and peak RSS; writes bench/results/grpo_vs_trl_<tokens>.json.
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
PROMPTS, SAMPLES, LR = 4, 4, 1e-6


def write_prompts(count: int, path: Path) -> None:
    """Two-digit additions with their answers, in TRL's conversational layout (rlxf reads it too)."""
    from rlxf.data.tasks import arithmetic

    rows = [{"prompt": p.messages, "answer": p.context["answer"]} for p in arithmetic(count, digits=2, seed=0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run_rlxf(data: Path, steps: int, tokens: int, workdir: Path, threads: int) -> dict:
    from rlxf.config import load_config
    from rlxf.recipes.online import OnlineConfig, train_online
    from rlxf.train.metrics import read_metrics

    started = time.perf_counter()
    config = load_config(
        OnlineConfig,
        None,
        [
            f"output_dir={workdir}",
            "algo=grpo",
            "aggregation=token_mean",  # TRL's loss_type="dapo" below: Σ over tokens / the global batch's tokens
            "task.name=file",
            f"task.path={data}",
            "task.eval_count=0",
            f"sampling.n={SAMPLES}",
            f"sampling.max_new_tokens={tokens}",
            f"train.batch_size={PROMPTS}",
            f"train.max_steps={steps}",
            f"train.lr={LR}",
            f"train.threads={threads}",
            "train.shuffle=false",
            "train.scheduler=constant",
            "train.max_grad_norm=1.0",
        ],
    )
    train_online(config)
    rows = read_metrics(workdir / "metrics.jsonl", "train")
    return {
        "step_seconds": [r["step_seconds"] for r in rows],
        "completion_tokens": [r["response_length"] for r in rows],
        "rewards": [r["reward"] for r in rows],
        "total_seconds": time.perf_counter() - started,
        "peak_rss_gib": peak_rss_gib(),
    }


def run_trl(data: Path, steps: int, tokens: int, workdir: Path, fast: bool) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlxf.models import SMOLLM2, resolve_model_path
    from rlxf.rewards import MathVerifier

    started = time.perf_counter()
    folder = resolve_model_path(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    verifier = MathVerifier()
    step_seconds, lengths, rewards = [], [], []

    def math_reward(prompts, completions, answer, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores = verifier.score(prompts, texts, answer=answer).rewards.tolist()
        rewards.append(sum(scores) / len(scores))
        return scores

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    args = GRPOConfig(
        **TRL_CPU_FP32,
        output_dir=str(workdir),
        per_device_train_batch_size=PROMPTS * SAMPLES,
        num_generations=SAMPLES,
        max_completion_length=tokens,
        max_steps=steps,
        learning_rate=LR,
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        shuffle_dataset=False,
        gradient_checkpointing=not fast,
    )
    dataset = load_dataset("json", data_files=str(data), split="train")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[math_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    return {
        "step_seconds": step_seconds,
        "completion_tokens": lengths,
        "rewards": rewards,
        "total_seconds": time.perf_counter() - started,
        "peak_rss_gib": peak_rss_gib(),
        "trl_version": __import__("trl").__version__,
    }


def worker(kind: str, data: Path, steps: int, tokens: int) -> None:
    import torch

    with tempfile.TemporaryDirectory() as workdir:
        if kind == "rlxf":
            result = run_rlxf(data, steps, tokens, Path(workdir), torch.get_num_threads())
        else:
            result = run_trl(data, steps, tokens, Path(workdir), fast=kind == "trl-fast")
    report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per completion")
    parser.add_argument("--runs", default="rlxf,trl,trl-fast", help="comma-separated: rlxf, trl, trl-fast")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.steps, args.tokens)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        write_prompts(args.steps * PROMPTS, data)
        common = ["--data", str(data), "--steps", str(args.steps), "--tokens", str(args.tokens)]
        results = {kind: launch(__file__, kind, *common) for kind in args.runs.split(",")}
    per_step = PROMPTS * SAMPLES
    print(
        f"{PROMPTS} prompts x {SAMPLES} samples, up to {args.tokens} new tokens; {args.steps} steps "
        f"(median over steps {WARMUP + 1}..{args.steps})"
    )
    print(f"{'run':10} {'s/step':>8} {'samples/s':>10} {'mean tokens':>12} {'peak RSS GiB':>13}")
    for kind, result in results.items():
        seconds = median_step(result)
        length = statistics.mean(result["completion_tokens"]) if result["completion_tokens"] else float("nan")
        print(f"{kind:10} {seconds:8.2f} {per_step / seconds:10.2f} {length:12.1f} {result['peak_rss_gib']:13.2f}")
    if "rlxf" in results:
        for kind in results.keys() - {"rlxf"}:
            print(f"rlxf: {median_step(results[kind]) / median_step(results['rlxf']):.2f}x the samples/s of {kind}")
    out = args.out or ROOT / "bench" / "results" / f"grpo_vs_trl_{args.tokens}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "command": " ".join(sys.argv)}, indent=2) + "\n")


if __name__ == "__main__":
    main()

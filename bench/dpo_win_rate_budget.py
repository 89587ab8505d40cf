"""How much DPO does SmolLM2-135M need before the reward model prefers its answers?

Trains a reward model (judge), then DPO on all training pairs of the shipped HH-RLHF
harmless data with a constant learning rate, and after each budget in --budgets
evaluates the policy against the reference on held-out prompts: DPO preference accuracy,
win rate judged by the RM (95% interval, sign test), KL and lengths. Each budget resumes
the previous run from its checkpoint, so the total cost is that of the largest budget.

    python bench/dpo_win_rate_budget.py --budgets 25,50,100,200 --prompts 128

Writes bench/results/dpo_win_rate_budget.json and prints one line per budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlxf.config import load_config
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.recipes.evaluate import EvalConfig, evaluate
from rlxf.recipes.reward_model import RewardModelConfig, train_reward_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.path=data/hh_rlhf_harmless_demo.jsonl", "data.eval_fraction=0.2", "data.on_bad_row=skip"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="25,50,100,200", help="DPO steps at which to evaluate")
    parser.add_argument("--prompts", type=int, default=128, help="held-out prompts for the win rate")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--rm-epochs", default="1")
    parser.add_argument("--lr", default="2e-5")
    parser.add_argument("--beta", default="0.1")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_win_rate")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dpo_win_rate_budget.json")
    args = parser.parse_args()

    started = time.perf_counter()
    rm_dir = args.work / "rm"
    if not (rm_dir / "model" / "config.json").exists():
        train_reward_model(
            load_config(
                RewardModelConfig,
                ROOT / "configs" / "rm_hh.yaml",
                [f"output_dir={rm_dir}", f"train.epochs={args.rm_epochs}"],
            )
        )
    rm_accuracy = json.loads((rm_dir / "eval.json").read_text())["held_out"]

    rows = []
    budgets = [int(b) for b in args.budgets.split(",")]
    for budget in budgets:
        dpo_dir = args.work / "dpo"
        train_dpo(
            load_config(
                DPOConfig,
                None,
                [
                    f"output_dir={dpo_dir}",
                    *DATA,
                    "data.max_length=256",
                    "data.max_prompt_length=96",
                    f"data.limit={4 * max(budgets)}",
                    f"train.max_steps={budget}",
                    "train.batch_size=4",
                    f"train.lr={args.lr}",
                    "train.scheduler=constant",
                    "train.warmup_steps=5",
                    f"train.save_every={budget}",
                    "train.keep_checkpoints=1",
                    f"beta={args.beta}",
                ],
            )
        )
        dpo_eval = json.loads((dpo_dir / "eval.json").read_text())["held_out"]
        result = evaluate(
            load_config(
                EvalConfig,
                None,
                [
                    f"output_dir={args.work / f'eval_{budget}'}",
                    f"policy={dpo_dir / 'model'}",
                    f"reward_model={rm_dir / 'model'}",
                    *DATA,
                    "data.max_length=256",
                    "data.max_prompt_length=96",
                    f"generation.num_prompts={args.prompts}",
                    f"generation.max_new_tokens={args.max_new_tokens}",
                    f"generation.temperature={args.temperature}",
                ],
            )
        )
        row = {
            "steps": budget,
            "pairs_seen": 4 * budget,
            "preference_accuracy": dpo_eval,
            "win_rate": result["win_rate"],
            "kl": result["kl_to_reference"],
            "policy_length": result["policy_length_tokens"],
            "reference_length": result["reference_length_tokens"],
            "elapsed_seconds": time.perf_counter() - started,
        }
        rows.append(row)
        w = row["win_rate"]
        print(
            f"steps {budget:4d}: preference accuracy {dpo_eval['preference_accuracy']:.3f}, win rate "
            f"{w['value']:.3f} [{w['low']:.3f}, {w['high']:.3f}] (n={w['n']}, p={w['p_value_vs_half']:.3g}), "
            f"KL {row['kl']['value']:.2f}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"reward_model": rm_accuracy, "budgets": rows, "args": vars(args)}, indent=2, default=str) + "\n"
        )


if __name__ == "__main__":
    main()

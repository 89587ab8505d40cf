#!/usr/bin/env bash
# MA-RLHF's macro actions (Chai et al. 2025) against token-level PPO on the embedded model, same budget:
# two-digit additions, exact-answer verifier, PPO with a critic, 4 problems x 4 samples a step.
#   bash bench/macro_actions.sh [out_dir] [steps] [new_tokens]   (held-out greedy reward in <run>/eval.json)
set -euo pipefail
OUT=${1:-runs/macro_actions}
STEPS=${2:-20}
TOKENS=${3:-40}
RLXF=${RLXF:-.venv/bin/rlxf}
mkdir -p "$OUT"
for macro in none fixed; do
  $RLXF ppo output_dir="$OUT/$macro" task.name=arithmetic task.eval_count=50 macro_actions=$macro \
    sampling.n=4 sampling.max_new_tokens=$TOKENS train.batch_size=4 train.max_steps=$STEPS train.lr=2e-5 \
    train.scheduler=constant > "$OUT/$macro.log" 2>&1
done
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for run in ("none", "fixed"):
    results = json.loads((Path(sys.argv[1]) / run / "eval.json").read_text())
    before, after = results["before"], results["after"]
    print(run, {k: before.get(k) for k in ("greedy_reward",)}, "->", {k: after.get(k) for k in ("greedy_reward", "greedy_reward_low", "greedy_reward_high")})
PY

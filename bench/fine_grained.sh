#!/usr/bin/env bash
# Fine-grained RLHF (Wu et al. 2023) on the embedded model: the three segment-level reward models on
# the qa-feedback data (held-out accuracy and F1 per class), then PPO with their verdicts as dense
# per-segment rewards against the same sums as one sequence-level reward, on the same budget.
#   bash bench/fine_grained.sh [out_dir] [steps]        (results in <out_dir>/summary.json)
set -euo pipefail
OUT=${1:-runs/fine_grained}
STEPS=${2:-20}
DATA=${DATA:-../shared/data/qa_feedback_dev_feedback.json}
RLXF=${RLXF:-.venv/bin/rlxf}
PASSAGES=1
mkdir -p "$OUT"

# relevance reads little of the prompt (the authors' R1 reads the question only): its end, where the question is
for spec in relevance:64:2 factuality:384:2 completeness:384:2; do
  IFS=: read -r kind prompt_tokens epochs <<< "$spec"
  [ -f "$OUT/rm_$kind/eval.json" ] || $RLXF fgrm output_dir="$OUT/rm_$kind" kind=$kind passages=$PASSAGES \
    data.path="$DATA" data.max_prompt_length=$prompt_tokens train.epochs=$epochs > "$OUT/rm_$kind.log" 2>&1
done

# the policy's prompts hold what the reward models read: the first passage, then the question
.venv/bin/python - "$DATA" "$OUT/prompts.jsonl" "$PASSAGES" <<'EOF'
import json, sys
from rlxf.data.fine_grained import qa_prompt
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    for row in rows:
        out.write(json.dumps({"prompt": qa_prompt(row["question"], row["passages"][: int(sys.argv[3])])}) + "\n")
EOF

REWARDS="[{kind: fine_grained, model: $OUT/rm_relevance/model, weight: 0.3}, \
{kind: fine_grained, model: $OUT/rm_factuality/model, weight: 0.5}, \
{kind: fine_grained, model: $OUT/rm_completeness/model, weight: 0.3}]"
for placement in dense sequence; do
  dense=$([ $placement = dense ] && echo true || echo false)
  $RLXF ppo output_dir="$OUT/ppo_$placement" task.name=file task.path="$OUT/prompts.jsonl" task.eval_count=48 \
    rewards="$REWARDS" dense_rewards=$dense kl_coef=0.05 sampling.n=4 sampling.max_new_tokens=96 \
    train.batch_size=4 train.max_steps=$STEPS train.lr=1e-5 train.scheduler=constant > "$OUT/ppo_$placement.log" 2>&1
done

.venv/bin/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {}
for kind in ("relevance", "factuality", "completeness"):
    held = json.loads((out / f"rm_{kind}" / "eval.json").read_text())["held_out"]
    summary[f"rm_{kind}"] = {k: held[k] for k in ("responses", "accuracy", "all_error_accuracy", "all_no_error_accuracy",
                                                  "error_f1", "no_error_f1", "auroc")}
for placement in ("dense", "sequence"):
    results = json.loads((out / f"ppo_{placement}" / "eval.json").read_text())
    summary[f"ppo_{placement}"] = {
        when: {k: v for k, v in results[when].items() if k.startswith("greedy_reward")} for when in ("before", "after")
    }
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF

#!/usr/bin/env bash
# C3PO (Stephan et al. 2024) on the embedded model: one sentence of feedback about math word problems,
# learned in scope (GSM8K questions) without spreading to bare arithmetic (near) or general chat (out),
# against the same run without anchors (sigma 0: plain DPO on the in-scope pairs).
#   bash bench/verbal_feedback.sh [out_dir]          (results in <out_dir>/{c3po,dpo_only}/report.md)
set -euo pipefail
OUT=${1:-runs/verbal_feedback}
RLXF=${RLXF:-.venv/bin/rlxf}
.venv/bin/python bench/verbal_feedback.py ../shared/data/gsm8k_train.jsonl "$OUT/prompts"
FEEDBACK="When you solve a math word problem, begin with 'Let's think step by step.'"
for run in c3po:0.1:0.2 dpo_only:0:0; do
  IFS=: read -r name near out <<< "$run"
  $RLXF c3po output_dir="$OUT/$name" feedback="$FEEDBACK" in_scope="$OUT/prompts/in_scope.jsonl" \
    near_scope="$OUT/prompts/near_scope.jsonl" revise=bench/verbal_feedback.py:prepend \
    adherence="{kind: format, pattern: '^\\s*Let.s think step by step'}" sigma_near=$near sigma_out=$out \
    prompts_per_scope=48 max_new_tokens=64 dpo.train.epochs=4 dpo.train.lr=1e-5 > "$OUT/$name.log" 2>&1
done
grep -h "^| \|rewrites" "$OUT/c3po/report.md" "$OUT/dpo_only/report.md"

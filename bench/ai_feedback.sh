#!/usr/bin/env bash
# AI feedback on the embedded model, measured against people's labels (HH helpfulness):
#   1. UltraFeedback-style rating: the embedded model rates both responses 1-5 on each of the four aspects;
#   2. a judge of one's own: people's verdicts on training pairs (both orders) -> LoRA through rlxf sft;
#   3. the untrained and the trained judge, alone and as a panel, compare the held-out pairs in both orders.
#   bash bench/ai_feedback.sh [out_dir] [train_pairs] [held_out_pairs]   (results in <out_dir>/*/agreement.json)
set -euo pipefail
OUT=${1:-runs/ai_feedback}
TRAIN=${2:-400}
HELD=${3:-100}
DATA=${DATA:-../shared/data/hh_rlhf_helpful_base_test_dev.jsonl}
RLXF=${RLXF:-.venv/bin/rlxf}
mkdir -p "$OUT"

$RLXF judge-data output_dir="$OUT/judge_data" data.path="$DATA" data.on_bad_row=skip \
  data.limit=$TRAIN data.eval_limit=$HELD > "$OUT/judge_data.log" 2>&1
HELD_OUT="$OUT/judge_data/held_out.jsonl"

$RLXF annotate output_dir="$OUT/ultrafeedback" data.path="$HELD_OUT" mode=rating max_new_tokens=32 \
  > "$OUT/ultrafeedback.log" 2>&1

[ -f "$OUT/judge/model/config.json" ] || $RLXF sft output_dir="$OUT/judge" data.path="$OUT/judge_data/train.jsonl" \
  data.max_length=1024 data.max_prompt_length=1000 data.eval_fraction=0.05 policy.lora.rank=16 policy.lora.alpha=32 \
  train.epochs=1 train.batch_size=8 train.lr=2e-4 train.scheduler=constant > "$OUT/judge.log" 2>&1

$RLXF annotate output_dir="$OUT/panel" data.path="$HELD_OUT" mode=pairwise aspects=[overall] max_new_tokens=24 \
  judges="[smollm2-135m-instruct, $OUT/judge/model]" aggregate=mean > "$OUT/panel.log" 2>&1
grep -h "^| " "$OUT/ultrafeedback/report.md" "$OUT/panel/report.md"

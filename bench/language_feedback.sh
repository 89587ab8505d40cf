#!/usr/bin/env bash
# Language feedback on the embedded model (HH helpfulness):
#   1. a seq2seq reward model (Zhou et al. 2025): correction + identity rows from training pairs, rlxf sft,
#      then its held-out pair accuracy by the sum and the mean of its token rewards;
#   2. critique-then-refine (Align Anything): the embedded model answers, critiques and rewrites; a gold
#      reward model (rlxf rm on all training pairs: runs/safety/rm_gold) says whether the rewrites are better.
#   bash bench/language_feedback.sh [out_dir] [train_pairs] [held_out_pairs] [gold_rm]
set -euo pipefail
OUT=${1:-runs/language_feedback}
TRAIN=${2:-300}
HELD=${3:-100}
GOLD=${4:-runs/safety/rm_gold/model}
DATA=${DATA:-../shared/data/hh_rlhf_helpful_base_test_dev.jsonl}
RLXF=${RLXF:-.venv/bin/rlxf}
mkdir -p "$OUT"

$RLXF correction-data output_dir="$OUT/correction_data" data.path="$DATA" data.on_bad_row=skip \
  data.limit=$TRAIN data.eval_limit=$HELD > "$OUT/correction_data.log" 2>&1
[ -f "$OUT/seq2seq_rm/model/config.json" ] || $RLXF sft output_dir="$OUT/seq2seq_rm" \
  data.path="$OUT/correction_data/train.jsonl" data.max_length=1024 data.max_prompt_length=768 data.eval_fraction=0.05 \
  train.epochs=1 train.batch_size=8 train.lr=1e-5 > "$OUT/seq2seq_rm.log" 2>&1
.venv/bin/python bench/language_feedback.py pairs "$OUT/seq2seq_accuracy.json" \
  "$OUT/correction_data/held_out.jsonl" "$OUT/seq2seq_rm/model"

.venv/bin/python - "$DATA" "$OUT/prompts.jsonl" <<'PY'
import json, sys
from rlxf.data import read_preferences
pairs, _ = read_preferences(sys.argv[1], on_bad_row="skip")
seen, rows = set(), []
for pair in pairs[-400:]:  # the file's end: away from the pairs the reward models trained on first
    key = pair.prompt[0]["content"]
    if len(pair.prompt) == 1 and key not in seen:
        seen.add(key); rows.append({"prompt": key})
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in rows[:48]))
PY
$RLXF refine output_dir="$OUT/refine" prompts="$OUT/prompts.jsonl" max_new_tokens=96 > "$OUT/refine.log" 2>&1
.venv/bin/python bench/language_feedback.py refined "$OUT/refine_gold.json" "$OUT/refine" "$GOLD"

#!/usr/bin/env bash
# GPU check: a few DPO and GRPO steps on this machine's GPU with a random-weight SmolLM2-135M
# (nothing downloaded), printing generation/training tokens per second and MFU.
#   bash bench/gpu_check.sh [out_dir]        (results also in <out_dir>/gpu_check.json)
# Uses the python3 on PATH; it needs torch, transformers, peft, safetensors, tokenizers, pyyaml,
# numpy, pyarrow, tqdm, tensorboard and matplotlib (rlxf itself is taken from this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs}/gpu_check}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 bench/gpu_check.py --out "$out"

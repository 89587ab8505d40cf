"""bench/gpu_check.py runs end to end (here on the CPU, with the tiny model) and reports its figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_reports_throughput_and_utilization(tmp_path):
    argv = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path), "--model", "tiny-llama"]
    argv += ["--steps", "2", "--batch", "2", "--dtype", "float32"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["parameters"] > 0
    for key in ("dpo/train_tokens_per_second", "grpo/train_tokens_per_second", "grpo/generate_tokens_per_second"):
        assert report[key] > 0, key
    # achieved TFLOP/s is 6 x parameters x training tokens/s; no peak is known for a CPU
    assert (
        abs(report["dpo/train_tflops"] - 6 * report["parameters"] * report["dpo/train_tokens_per_second"] / 1e12)
        < 1e-12
    )
    assert report["dpo/mfu"] is None

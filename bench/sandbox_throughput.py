"""Unit-test reward throughput: MBPP programs scored per second, per sandbox.

The reference solutions of MBPP's training split (374 programs, 3 asserts each, from
../shared/data) are scored by `UnitTestReward` with 2 workers under each isolation:
`bwrap` (the OS sandbox, the default), the same without its memory cgroup (what a trainer
that cannot make one gets), and `process` (resource limits and an audit hook only, the design
before OS isolation). Every program must pass in each, or the numbers mean nothing.

    python bench/sandbox_throughput.py [--programs 374] [--repeats 3]

Prints programs per second and milliseconds per program for each, and writes
bench/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MBPP = ROOT.parent / "shared" / "data" / "mbpp_train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=374)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from rlxf.rewards.code import UnitTestReward
    from rlxf.rewards.sandbox import SandboxLimits

    rows = [json.loads(line) for line in MBPP.read_text().splitlines()][: args.programs]
    programs, tests, setup = (
        [r["code"] for r in rows],
        [r["test_list"] for r in rows],
        [r["test_setup_code"] for r in rows],
    )
    from rlxf.rewards.sandbox import cgroup

    results, find_parent = {}, cgroup.find_parent
    for name, isolation, with_cgroup in (
        ("bwrap", "bwrap", True),
        ("bwrap-no-cgroup", "bwrap", False),
        ("process", "process", True),
    ):
        cgroup.find_parent = find_parent if with_cgroup else lambda: None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reward = UnitTestReward(limits=SandboxLimits(timeout_seconds=30), workers=2, sandbox=isolation)
        reward.score([], programs[:4], tests=tests[:4], setup=setup[:4])  # warm-up: the first sandbox probes bwrap
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            batch = reward.score([], programs, tests=tests, setup=setup)
            seconds.append(time.perf_counter() - started)
            failing = [r["task_id"] for r, value in zip(rows, batch.rewards.tolist()) if value < 1]
            if failing:
                raise SystemExit(f"{name}: reference solutions failed: {failing[:10]}")
        best = statistics.median(seconds)
        results[name] = {"programs_per_second": len(rows) / best, "ms_per_program": 1000 * best / len(rows)}
        print(f"{name:16s} {len(rows) / best:7.1f} programs/s  {1000 * best / len(rows):6.1f} ms/program")
    ratio = results["process"]["programs_per_second"] / results["bwrap"]["programs_per_second"]
    print(f"bwrap costs {ratio:.2f}x the time of process isolation per program")
    cgroup.find_parent = find_parent
    if cgroup.find_parent() is None:
        print("no memory cgroup can be made here: the two bwrap rows measure the same thing")
    out = ROOT / "bench" / "results" / "sandbox_throughput.json"
    out.write_text(json.dumps({"programs": len(rows), "workers": 2, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Start-up memory of a sharded (FSDP2) run: each rank's peak RSS from loading the model to
holding its shards, when only rank 0 reads the weights (rlxf's start-up) and when every rank
reads them (the start-up before meta-device loading).

    python bench/fsdp_startup.py [--model smollm2-135m-instruct] [--ranks 2] [--dtype bfloat16]

Each setting runs in fresh processes under torchrun, one per rank; results go to
bench/results/fsdp_startup_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SETTINGS = {"rank0_reads": "fsdp", "every_rank_reads": "ddp"}
"""Setting -> the strategy the policy is built for (``ddp`` builds it whole on every rank);
both then shard it with FSDP2."""


def gib(value: int) -> float:
    return value / 2**30


def rank_worker(model: str, dtype: str, build_for: str, out: Path) -> None:
    import resource

    import torch

    from rlxf.config import ModelSection
    from rlxf.parallel import distributed
    from rlxf.recipes.common import build_policy
    from rlxf.train.data_parallel import TrainingForward

    distributed.init_from_environment()
    torch.set_num_threads(1)
    process = psutil.Process()
    before = process.memory_info().rss
    policy, _ = build_policy(ModelSection(name=model, dtype=dtype), seed=0, strategy=build_for)
    sharded = TrainingForward(policy, "fsdp")
    distributed.barrier()
    result = {
        "rank": distributed.rank(),
        "rss_before_load_gib": gib(before),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_after_sharding_gib": gib(process.memory_info().rss),
        "local_parameter_gib": gib(sum(p.to_local().numel() * p.element_size() for p in policy.parameters())),
    }
    with torch.no_grad():  # one forward pass: the shards are usable
        sharded(lambda m: m(torch.tensor([[1, 2, 3]])).logits.sum())
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    distributed.shutdown()


def run_setting(model: str, dtype: str, ranks: int, build_for: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        argv += [__file__, "--worker", build_for, "--model", model, "--dtype", dtype, "--out", out]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "RLXF_DEVICE": "cpu"})
        if done.returncode:
            raise SystemExit(done.stderr[-4000:])
        return [json.loads((Path(out) / f"rank{rank}.json").read_text()) for rank in range(ranks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--worker")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return rank_worker(args.model, args.dtype, args.worker, args.out)
    results = {name: run_setting(args.model, args.dtype, args.ranks, build_for) for name, build_for in SETTINGS.items()}
    print(f"{'setting':17} {'rank':>4} {'peak RSS GiB':>13} {'RSS after GiB':>14} {'own shards GiB':>15}")
    for name, ranks in results.items():
        for r in ranks:
            print(
                f"{name:17} {r['rank']:4d} {r['peak_rss_gib']:13.2f} {r['rss_after_sharding_gib']:14.2f}"
                f" {r['local_parameter_gib']:15.3f}"
            )
    command = "python bench/fsdp_startup.py " + " ".join(sys.argv[1:])
    payload = {"command": command.strip(), "model": args.model, "dtype": args.dtype, "ranks": args.ranks}
    (HERE / "results" / f"fsdp_startup_{args.dtype}.json").write_text(
        json.dumps({**payload, "results": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

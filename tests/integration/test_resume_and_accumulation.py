"""Exact resume after SIGKILL, gradient accumulation equal to a larger batch, NaN guard."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlxf.config import TrainSection, load_config
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.train import NonFiniteLoss, Run
from rlxf.train.metrics import read_metrics


def losses(output_dir):
    return {r["step"]: r["loss"] for r in read_metrics(output_dir / "metrics.jsonl", "train")}


def dpo_command(output_dir, data):
    return [
        sys.executable,
        "-m",
        "rlxf.cli",
        "dpo",
        f"output_dir={output_dir}",
        "policy.name=tiny-llama",
        f"data.path={data}",
        "data.max_length=160",
        "data.max_prompt_length=96",
        "train.max_steps=12",
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.lr=1e-3",
        "train.save_every=3",
        "train.threads=1",
        "train.warmup_steps=2",
        "policy.lora.rank=4",
        "policy.lora.dropout=0.1",
    ]


def test_sigkill_then_resume_gives_the_same_per_step_losses(tmp_path, small_hh):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(dpo_command(straight, small_hh), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        dpo_command(killed, small_hh), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "checkpoint-6").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model").exists(), "the run finished before it was killed"
    interrupted_at = max(losses(killed))
    assert interrupted_at < 12

    subprocess.run(dpo_command(killed, small_hh), check=True, env=env, capture_output=True)
    expected, resumed = losses(straight), losses(killed)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(1, 13):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    assert torch.equal(*(torch.load(d / "reference_logps.pt")["tensors"]["train/logps"] for d in (straight, killed)))


def test_accumulation_equals_one_big_batch(tmp_path, small_hh):
    def run(micro, output_dir):
        config = load_config(
            DPOConfig,
            None,
            [
                f"output_dir={output_dir}",
                "policy.name=tiny-llama",
                f"data.path={small_hh}",
                "data.max_length=160",
                "data.max_prompt_length=96",
                "train.max_steps=2",
                "train.batch_size=8",
                f"train.micro_batch_size={micro}",
                "train.lr=1e-3",
            ],
        )
        train_dpo(config)
        return read_metrics(output_dir / "metrics.jsonl", "train")

    big, accumulated = run(8, tmp_path / "big"), run(1, tmp_path / "acc")
    assert len(big) == len(accumulated) == 2
    for a, b in zip(big, accumulated):
        for key in ("loss", "grad_norm", "rewards/accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
        # β times a difference of two sums of ~100 log-probs each, padded differently per micro-batch
        assert a["rewards/margin"] == pytest.approx(b["rewards/margin"], abs=1e-5)


def test_non_finite_loss_stops_the_step_and_names_it(tmp_path):
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    run = Run(tmp_path, model, TrainSection(max_steps=3, batch_size=2), num_examples=4, show_progress=False)
    batch = next(run.steps())
    model(torch.ones(1, 2)).sum().backward()
    with pytest.raises(NonFiniteLoss, match=r"step 1 \(examples \[\d, \d\]\): loss is nan"):
        run.end_step(math.nan)
    assert torch.equal(model.weight, before) and model.weight.grad is None
    assert len(batch) == 2


def test_profile_step_writes_that_steps_operators_stacks_and_trace(tmp_path):
    model = torch.nn.Linear(8, 1)
    train = TrainSection(max_steps=3, batch_size=2, profile_step=2)
    run = Run(tmp_path, model, train, num_examples=6, show_progress=False)
    for _ in run.steps():
        model(torch.ones(4, 8)).sum().backward()
        run.end_step(1.0)
    profile = tmp_path / "profile"
    assert sorted(p.name for p in profile.iterdir()) == ["step_2.json", "step_2.stacks", "step_2.txt"]
    assert "Self CPU time total" in (profile / "step_2.txt").read_text()
    assert "aten::addmm" in (profile / "step_2.json").read_text()  # the forward of step 2, in the trace
    assert "test_resume_and_accumulation.py" in (profile / "step_2.stacks").read_text()

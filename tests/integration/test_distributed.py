"""Data parallelism on CPU (gloo): two ranks give the losses of one, and resume across rank counts."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rlxf.train.metrics import read_metrics

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def launch(ranks: int, command: str, *overrides: str, timeout: int = 600) -> None:
    """`torchrun --nproc_per_node ranks -m rlxf.cli command ...` (a plain process for one rank)."""
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m"]
    argv = [*(prefix if ranks > 1 else [sys.executable, "-m"]), "rlxf.cli", command, *overrides]
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def train_rows(output_dir):
    return {r["step"]: r for r in read_metrics(output_dir / "metrics.jsonl", "train")}


def dpo(output_dir, data, *extra):
    return [
        f"output_dir={output_dir}",
        "policy.name=tiny-llama",
        f"data.path={data}",
        "data.max_length=160",
        "data.max_prompt_length=96",
        "train.batch_size=4",
        "train.micro_batch_size=1",
        "train.lr=1e-3",
        "train.scheduler=constant",
        "train.max_steps=6",
        "train.save_every=3",
        "policy.lora.rank=4",
        *extra,
    ]


def resume_copy(finished, target, *, last_step: int):
    """A copy of a finished run without its last checkpoint: rerunning it resumes from the one before."""
    shutil.copytree(finished, target, ignore=shutil.ignore_patterns("ray"))  # not Ray's sockets
    shutil.rmtree(target / "checkpoints" / f"checkpoint-{last_step}")
    return target


def assert_same_losses(expected, got, steps, rel=1e-4):
    assert sorted(got) == list(steps)
    for step in steps:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=rel, abs=1e-6), step
        assert got[step]["grad_norm"] == pytest.approx(expected[step]["grad_norm"], rel=1e-3, abs=1e-7), step
        assert got[step]["tokens"] == expected[step]["tokens"], step


def test_dpo_on_two_ranks_gives_the_losses_of_one_and_resumes_on_one(tmp_path, small_hh):
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, "dpo", *dpo(one, small_hh))
    launch(2, "dpo", *dpo(two, small_hh))
    single, double = train_rows(one), train_rows(two)
    assert_same_losses(single, double, range(1, 7))
    assert single[6]["loss"] != pytest.approx(single[1]["loss"], rel=1e-3)  # it trains

    # a checkpoint written by two ranks resumes on one: steps 4..6 again, from step 3's state
    resumed = resume_copy(two, tmp_path / "resumed", last_step=6)
    launch(1, "dpo", *dpo(resumed, small_hh))
    assert_same_losses(double, train_rows(resumed), range(1, 7))


def grpo(output_dir, prompts, *extra):
    return [
        f"output_dir={output_dir}",
        "policy.name=tiny-llama",
        "task.name=file",
        f"task.path={prompts}",
        "task.eval_count=4",
        "rewards=[{kind: format, pattern: '[0-9]'}]",
        "sampling.n=4",
        "sampling.max_new_tokens=12",
        "train.batch_size=4",
        "train.lr=1e-2",
        "train.scheduler=constant",
        "train.max_steps=4",
        "train.save_every=2",
        *extra,
    ]


def test_grpo_on_two_ranks_gives_the_samples_and_losses_of_one_and_resumes_on_two(tmp_path, prompt_file):
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, "grpo", *grpo(one, prompt_file))
    launch(2, "grpo", *grpo(two, prompt_file))
    single, double = train_rows(one), train_rows(two)
    assert_same_losses(single, double, range(1, 5))
    for step in range(1, 5):  # the same samples: per-prompt seeds, whichever rank draws them
        assert double[step]["reward"] == pytest.approx(single[step]["reward"], abs=1e-9), step
        assert double[step]["response_length"] == pytest.approx(single[step]["response_length"], abs=1e-9), step
    # (GRPO's sequence mean of group-centred advantages is 0 on-policy: the gradient is what moves)
    assert len({round(single[s]["grad_norm"], 6) for s in single}) > 1

    # a checkpoint written by one rank resumes on two
    resumed = resume_copy(one, tmp_path / "resumed", last_step=4)
    launch(2, "grpo", *grpo(resumed, prompt_file))
    assert_same_losses(single, train_rows(resumed), range(1, 5))


def test_dynamic_sampling_on_two_sharded_ranks_draws_as_many_rollouts_on_each(tmp_path, prompt_file):
    """Each rank holds two prompts; a rank whose groups all score alike wants another rollout. Every
    rank must then draw as well: a sharded policy gathers its weights for each generation (a
    collective), so ranks that decided alone would wait on each other's collectives. Per-rank
    metrics are averaged over ranks, so a round count that differed between ranks would log as a
    fraction. (With this reward, a random tiny model's groups of 4 all miss or all hit about a
    third of the time.)"""
    extra = ("rewards=[{kind: format, pattern: '[0-2]'}]", "dynamic_sampling=true", "distributed.strategy=fsdp")
    launch(2, "grpo", *grpo(tmp_path, prompt_file, *extra), timeout=240)  # ranks out of step hang
    rows = train_rows(tmp_path)
    assert sorted(rows) == [1, 2, 3, 4]
    rounds = [rows[step]["rollouts"] for step in rows]
    assert all(float(r).is_integer() for r in rounds) and max(rounds) >= 2, rounds
    sampled = [rows[step]["zero_variance_groups_sampled"] for step in rows]
    assert any(s > 0 for s in sampled), sampled  # some groups had no signal before the extra rounds
    for step in rows:  # the batch kept its size: 4 prompts x 4 samples trained on, filled or not
        assert rows[step]["zero_variance_groups"] == pytest.approx(rows[step]["dynamic_sampling_unfilled"])


def test_sharded_dpo_and_grpo_give_the_losses_of_one_rank_and_resume_across_rank_counts(
    tmp_path, small_hh, prompt_file
):
    """FSDP2 over two ranks, full fine-tunes (so the embeddings, norm and head are sharded too):
    DPO and GRPO (with a KL term) losses, gradient norms and GRPO samples equal one rank's; a
    sharded checkpoint resumes on one rank and a one-rank checkpoint on two sharded ranks; the
    saved model is whole. Rank 1 builds its models empty and is sent rank 0's weights."""
    from safetensors.torch import load_file

    full = ("train.save_every=2",)
    runs = {
        "dpo": lambda out, *extra: dpo(out, small_hh, "policy.lora.rank=0", *full, *extra),
        "grpo": lambda out, *extra: grpo(out, prompt_file, *full, "kl_coef=0.1", *extra),
    }
    for command, overrides in runs.items():
        one, sharded = tmp_path / f"{command}-one", tmp_path / f"{command}-sharded"
        launch(1, command, *overrides(one))
        launch(2, command, *overrides(sharded, "distributed.strategy=fsdp"))
        single, double = train_rows(one), train_rows(sharded)
        steps = range(1, len(single) + 1)
        assert_same_losses(single, double, steps)
        for step in steps:
            assert double[step]["grad_norm"] == pytest.approx(single[step]["grad_norm"], rel=1e-4), (command, step)
        weights, sharded_weights = (load_file(run / "model" / "model.safetensors") for run in (one, sharded))
        assert sorted(weights) == sorted(sharded_weights)
        worst = max(float((weights[k] - sharded_weights[k]).abs().max()) for k in weights)
        # Summation order differs; Adam divides each weight's mean gradient by its RMS, so a weight whose
        # gradient nearly cancels moves by up to lr (1e-2) on small relative differences: 4 steps of
        # lr 1e-2 bound it at 4e-2, and a sharding mistake shows at that size
        assert worst < 1e-3, (command, worst)

        last = max(steps)
        launch(1, command, *overrides(resume_copy(sharded, tmp_path / f"{command}-on-one", last_step=last)))
        assert_same_losses(single, train_rows(tmp_path / f"{command}-on-one"), steps)
        on_two = resume_copy(one, tmp_path / f"{command}-on-two", last_step=last)
        launch(2, command, *overrides(on_two, "distributed.strategy=fsdp"))
        assert_same_losses(single, train_rows(on_two), steps)


def run_and_kill_one(argv: list[str], ready, find_processes, expected: int = 2) -> str:
    """Start ``argv``; once ``ready()`` holds, SIGKILL the last of the ``expected`` processes
    ``find_processes()`` lists; wait for the run to finish on its own and return its stderr."""
    run = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ready():
        assert run.poll() is None and time.time() < deadline, "the run ended before it was ready to be hit"
        time.sleep(0.05)
    victims = find_processes(run.pid)
    assert len(victims) == expected, victims
    os.kill(victims[-1], signal.SIGKILL)
    _, errors = run.communicate(timeout=600)
    assert run.returncode == 0, errors[-3000:]
    return errors


def children(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def processes_named(pattern: str):
    def find(_launcher_pid: int) -> list[int]:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    return find


def test_a_killed_rank_is_restarted_and_the_run_resumes_with_nothing_lost_or_repeated(tmp_path, small_hh):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    launch(1, "dpo", *dpo(straight, small_hh, "train.max_steps=12"))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    argv += ["-m", "rlxf.cli", "dpo", *dpo(killed, small_hh, "train.max_steps=12")]
    errors = run_and_kill_one(argv, (killed / "checkpoints" / "checkpoint-3").exists, children)
    assert "resumed dpo from" in errors, "the restarted ranks did not resume from the checkpoint"
    # every step once, each with the uninterrupted run's examples (token counts) and loss
    assert_same_losses(train_rows(straight), train_rows(killed), range(1, 13))


def test_ray_ranks_give_the_losses_of_one_rank(tmp_path, small_hh):
    pytest.importorskip("ray")
    one, ray_run = tmp_path / "one", tmp_path / "ray"
    launch(1, "dpo", *dpo(one, small_hh))
    launch(1, "dpo", *dpo(ray_run, small_hh, "distributed.backend=ray", "distributed.ranks=2"))
    assert_same_losses(train_rows(one), train_rows(ray_run), range(1, 7))
    assert (ray_run / "ray").exists() and (ray_run / "model").exists()


def test_a_killed_ray_rank_is_replaced_and_the_run_goes_on_from_its_checkpoint(tmp_path, small_hh):
    pytest.importorskip("ray")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    launch(1, "dpo", *dpo(straight, small_hh, "train.max_steps=12"))
    extra = ("train.max_steps=12", "distributed.backend=ray", "distributed.ranks=2", "distributed.max_restarts=1")
    argv = [sys.executable, "-m", "rlxf.cli", "dpo", *dpo(killed, small_hh, *extra)]
    errors = run_and_kill_one(argv, (killed / "checkpoints" / "checkpoint-3").exists, processes_named("RankActor.run"))
    assert "restarting all ranks from the last checkpoint" in errors
    assert_same_losses(train_rows(straight), train_rows(killed), range(1, 13))


def ray_workers_match_the_trainer(tmp_path, prompt_file, workers: str, actor: str, restarts: str, *extra) -> None:
    """GRPO with two Ray workers of a kind (one SIGKILLed after step 1) gives the samples, rewards
    and losses of the trainer doing that work itself; the replacement is counted once."""
    pytest.importorskip("ray")
    local, pooled = tmp_path / "local", tmp_path / "pooled"
    launch(1, "grpo", *grpo(local, prompt_file, "train.max_steps=6"))
    argv = [sys.executable, "-m", "rlxf.cli", "grpo", *grpo(pooled, prompt_file, "train.max_steps=6", *extra)]
    argv.append(f"{workers}=2")
    run_and_kill_one(argv, lambda: bool(train_rows(pooled)), processes_named(actor))
    expected, got = train_rows(local), train_rows(pooled)
    assert_same_losses(expected, got, range(1, 7))
    for step in range(1, 7):
        assert got[step]["reward"] == pytest.approx(expected[step]["reward"], abs=1e-9), step
    assert got[6][restarts] == 1 and got[1][restarts] == 0


def test_ray_rollout_workers_give_the_samples_of_the_trainer_and_survive_a_killed_worker(tmp_path, prompt_file):
    # the workers draw with the trainer's weights and the same per-prompt seeds (the broadcast's
    # recovery is tested on its own below)
    ray_workers_match_the_trainer(
        tmp_path, prompt_file, "distributed.rollout_workers", "RolloutWorker", "rollout_worker_restarts"
    )


def test_ray_reward_workers_give_the_trainers_rewards_and_survive_a_killed_worker(tmp_path, prompt_file):
    ray_workers_match_the_trainer(
        tmp_path, prompt_file, "distributed.reward_workers", "RewardWorker", "reward_worker_restarts"
    )


def test_a_ray_reference_gives_the_trainers_kl_and_survives_a_killed_worker_after_a_refresh(tmp_path, prompt_file):
    """GRPO with a KL loss and the reference refreshed every 2 steps: the reference in a Ray actor
    (SIGKILLed after step 3, so its replacement must be given the refreshed weights) gives the
    per-step KL and losses of the reference in the trainer."""
    pytest.importorskip("ray")
    kl = ("train.max_steps=6", "kl_coef=0.5", "kl_penalty=loss", "reference_refresh_every=2")
    local, remote = tmp_path / "local", tmp_path / "remote"
    launch(1, "grpo", *grpo(local, prompt_file, *kl))
    argv = [
        sys.executable,
        "-m",
        "rlxf.cli",
        "grpo",
        *grpo(remote, prompt_file, *kl),
        "distributed.reference_worker=true",
    ]
    run_and_kill_one(argv, lambda: len(train_rows(remote)) >= 3, processes_named("ReferenceWorker"), expected=1)
    expected, got = train_rows(local), train_rows(remote)
    assert_same_losses(expected, got, range(1, 7))
    for step in range(1, 7):
        assert got[step]["kl"] == pytest.approx(expected[step]["kl"], rel=1e-4, abs=1e-7), step
    # a refresh after steps 2 and 4 makes the reference the policy that samples steps 3 and 5
    assert all(abs(expected[step]["kl"]) < 1e-6 for step in (3, 5)), expected
    assert all(expected[step]["kl"] > 1e-6 for step in (2, 4, 6)), expected


def test_each_of_two_sharded_ranks_gets_its_own_ray_workers_and_the_losses_of_one_rank(tmp_path, prompt_file):
    """torchrun with 2 FSDP ranks, each with a rollout worker (weights gathered whole, then
    broadcast over gloo), a reward worker and a reference worker refreshed every 2 steps: rank 0
    starts Ray, rank 1 joins it, and the per-step losses, rewards and KL are one plain rank's."""
    pytest.importorskip("ray")
    kl = ("kl_coef=0.5", "kl_penalty=loss", "reference_refresh_every=2")
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, "grpo", *grpo(one, prompt_file, *kl))
    workers = ("distributed.rollout_workers=1", "distributed.reward_workers=1", "distributed.reference_worker=true")
    launch(
        2,
        "grpo",
        *grpo(two, prompt_file, *kl, *workers, "distributed.strategy=fsdp", "distributed.weight_sync=broadcast"),
    )
    expected, got = train_rows(one), train_rows(two)
    assert_same_losses(expected, got, range(1, 5))
    for step in range(1, 5):
        assert got[step]["reward"] == pytest.approx(expected[step]["reward"], abs=1e-9), step
        assert got[step]["kl"] == pytest.approx(expected[step]["kl"], rel=1e-4, abs=1e-7), step
    assert expected[2]["kl"] > 1e-6 and expected[4]["kl"] > 1e-6


def test_ray_ranks_each_get_their_own_workers_and_the_losses_of_one_rank(tmp_path, prompt_file):
    """backend=ray: two rank actors, each starting a rollout and a reward worker in the driver's
    Ray; the per-step losses and rewards are one plain rank's."""
    pytest.importorskip("ray")
    one, ray_run = tmp_path / "one", tmp_path / "ray"
    launch(1, "grpo", *grpo(one, prompt_file))
    ranks = ("distributed.backend=ray", "distributed.ranks=2")
    workers = ("distributed.rollout_workers=1", "distributed.reward_workers=1")
    launch(1, "grpo", *grpo(ray_run, prompt_file, *ranks, *workers))
    expected, got = train_rows(one), train_rows(ray_run)
    assert_same_losses(expected, got, range(1, 5))
    for step in range(1, 5):
        assert got[step]["reward"] == pytest.approx(expected[step]["reward"], abs=1e-9), step
    assert got[4]["rollout_worker_restarts"] == 0 and got[4]["reward_worker_restarts"] == 0


def test_one_step_off_async_rollouts_learn_with_the_ratio_to_their_sampler(tmp_path, prompt_file):
    pytest.importorskip("ray")
    # at lr 1e-2 one update moves many token ratios past 0.2, so the stale batches get a wider clip
    extra = (
        "train.max_steps=12",
        "distributed.rollout_workers=2",
        "async_rollouts=true",
        "clip_low=0.5",
        "clip_high=0.5",
    )
    launch(1, "grpo", *grpo(tmp_path, prompt_file, *extra))
    rows = [train_rows(tmp_path)[step] for step in range(1, 13)]
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert first < 0.75 and last > 0.85, [r["reward"] for r in rows]
    # step 1's samples come from the trainer's weights; later ones from the weights one update back,
    # so the PPO ratio against their sampler is off 1 from the first pass on
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert all(abs(r["ratio"] - 1.0) > 1e-4 for r in rows[1:])


def test_one_step_off_async_rollouts_resume_exactly(tmp_path, prompt_file):
    """The checkpoint after step 4 keeps the weights step 5's rollout was started with (one update
    back), so a run resumed there draws step 5's samples again and ends as the uninterrupted one."""
    pytest.importorskip("ray")
    extra = ("train.max_steps=6", "distributed.rollout_workers=2", "async_rollouts=true")
    straight = tmp_path / "straight"
    launch(1, "grpo", *grpo(straight, prompt_file, *extra))
    assert (straight / "checkpoints" / "checkpoint-4" / "side-sampler.safetensors").exists()
    resumed = resume_copy(straight, tmp_path / "resumed", last_step=6)
    launch(1, "grpo", *grpo(resumed, prompt_file, *extra))
    expected, got = train_rows(straight), train_rows(resumed)
    assert_same_losses(expected, got, range(1, 7))
    for step in (5, 6):
        assert got[step]["reward"] == pytest.approx(expected[step]["reward"], abs=1e-9), step
        assert got[step]["ratio"] == pytest.approx(expected[step]["ratio"], rel=1e-5), step
    assert abs(expected[5]["ratio"] - 1.0) > 1e-4  # step 5 was drawn one update back


class KillDuringPush(dict):
    """Trainable tensors whose iteration SIGKILLs a worker after the first tensor went out."""

    def __init__(self, tensors, victim_pid):
        super().__init__(tensors)
        self.victim_pid = victim_pid

    def values(self):
        for index, tensor in enumerate(super().values()):
            if index == 1 and self.victim_pid:  # the first push only
                os.kill(self.victim_pid, signal.SIGKILL)
                self.victim_pid = None
            yield tensor


def test_a_worker_killed_in_the_middle_of_a_weight_broadcast_is_replaced_and_all_get_the_weights():
    ray = pytest.importorskip("ray")
    import functools

    import torch

    from rlxf.config import ModelSection
    from rlxf.parallel.weight_broadcast import live_trainable
    from rlxf.recipes.common import build_policy
    from rlxf.rollout import SamplingParams
    from rlxf.rollout.ray_workers import RayRolloutPool

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        policy, _ = build_policy(ModelSection(name="tiny-llama"), seed=0)
        factory = functools.partial(_tiny_engine)
        pool = RayRolloutPool(policy, factory, workers=2, weight_sync="broadcast")
        with torch.no_grad():
            for parameter in policy.parameters():
                parameter.add_(0.01)
        victim = ray.get(pool.workers[1].pid.remote())
        started = time.time()
        pool.broadcast.push(KillDuringPush(live_trainable(policy), victim))
        assert pool.restarts == 1 and time.time() - started < 120  # the survivor was not waited out
        prompts = [[{"role": "user", "content": f"hi {i}"}] for i in range(2)]
        sampling = SamplingParams(max_new_tokens=4, temperature=0)
        shares = [pool.workers[i].generate.remote([prompts[i]], sampling, None) for i in range(2)]
        local = _tiny_engine(policy).generate(prompts, sampling)
        assert [r.completion_ids[0] for r in ray.get(shares)] == local.completion_ids  # both have the new weights
        pool.close()
    finally:
        ray.shutdown()


class _Unstartable:
    """A pool actor whose engine cannot be built (as with sampling.engine=vllm and no vLLM)."""

    def __init__(self, threads: int):
        raise RuntimeError("engine=vllm needs vLLM")

    def pid(self) -> int:
        return os.getpid()


def test_a_worker_that_cannot_start_stops_the_run_with_its_error_instead_of_being_replaced_forever():
    ray = pytest.importorskip("ray")
    from rlxf.parallel.actors import ActorPool

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        pool = ActorPool(_Unstartable, (), workers=1, cpus_per_worker=1)
        with pytest.raises(RuntimeError, match="(?s)_Unstartable 0 could not start: .*engine=vllm needs vLLM"):
            pool.gather({0: pool.workers[0].pid.remote()}, lambda index: pool.workers[index].pid.remote())
        assert pool.restarts == 0
    finally:
        ray.shutdown()


def _tiny_engine(policy=None):
    from rlxf.config import ModelSection
    from rlxf.data.templating import ChatEncoder
    from rlxf.models import load_tokenizer
    from rlxf.recipes.common import build_policy
    from rlxf.rollout import HFEngine

    model = policy if policy is not None else build_policy(ModelSection(name="tiny-llama"), seed=0)[0]
    return HFEngine(model, ChatEncoder(load_tokenizer("tiny-llama"), max_length=64, max_prompt_length=32))


def test_a_sharded_rank_built_empty_computes_with_rank_0s_weights(tmp_path):
    """FSDP start-up without a second copy of the weights: rank 1's model is shapes only (meta
    device) and receives rank 0's, rotary frequencies (a buffer no state dict holds) included; both
    ranks compute rank 0's logits, sharded and after unsharding (tests/integration/sharded_start.py)."""
    import torch

    from rlxf.models import load_causal_lm

    script = os.path.join(os.path.dirname(__file__), "sharded_start.py")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, str(tmp_path)]
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tokens = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = load_causal_lm("tiny-llama", seed=3)(tokens).logits
        assert (load_causal_lm("tiny-llama", seed=0)(tokens).logits - expected).abs().max() > 1e-3
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for what in ("sharded", "whole"):
            torch.testing.assert_close(got[what], expected, rtol=1e-5, atol=1e-5, msg=f"rank {rank}, {what}")

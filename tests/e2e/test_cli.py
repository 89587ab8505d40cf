"""End to end through the command line."""

import json
import subprocess
import sys

import pytest

from ..conftest import DEMO_DATA, SHARED_DATA


def rlxf(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "rlxf.cli", *args], capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result


def test_help_lists_commands_and_fields():
    assert "dpo" in rlxf("--help").stdout
    out = rlxf("dpo", "--help").stdout
    assert "train.lr" in out and "Peak learning rate" in out and "loss = 'dpo'" in out


def test_bad_row_exits_with_the_place_named(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"}\n')
    result = rlxf("dpo", f"output_dir={tmp_path / 'out'}", "policy.name=tiny-llama", f"data.path={data}", check=False)
    assert result.returncode == 1
    assert "pairs.jsonl, line 2, field 'rejected': missing" in result.stderr


def test_bad_override_exits_2():
    result = rlxf("dpo", "train.lr=quick", check=False)
    assert result.returncode == 2 and "train.lr: expected float" in result.stderr


def test_yaml_config_file_and_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'sft'}\npolicy:\n  name: tiny-llama\ndata:\n  path: {DEMO_DATA}\n"
        "  limit: 8\n  eval_limit: 4\n  max_length: 128\n  max_prompt_length: 64\n  on_bad_row: skip\n"
        "train:\n  max_steps: 2\n  batch_size: 4\n"
    )
    rlxf("sft", str(config), "train.lr=1e-4")
    assert json.loads((tmp_path / "sft" / "eval.json").read_text())["steps"] == 2
    assert "lr: 0.0001" in (tmp_path / "sft" / "config.yaml").read_text()


@pytest.mark.slow
def test_mini_demo_on_the_embedded_models_writes_a_report(tmp_path):
    result = rlxf(
        "demo",
        f"output_dir={tmp_path}",
        "rm.train.max_steps=4",
        "rm.train.batch_size=8",
        "rm.data.limit=64",
        "rm.data.eval_limit=32",
        "dpo.train.max_steps=2",
        "dpo.data.limit=8",
        "dpo.data.eval_limit=8",
        "eval.generation.num_prompts=4",
        "eval.generation.max_new_tokens=8",
        "online.train.max_steps=2",
        "online.train.batch_size=2",
        "online.task.eval_count=4",
        "online.sampling.n=2",
        "online.sampling.max_new_tokens=8",
    )
    report = tmp_path / "report" / "report.md"
    assert str(report) in result.stderr
    text = report.read_text()
    for needle in ("Reward model pairwise accuracy", "DPO implicit-reward accuracy", "win rate", "95%", "GRPO"):
        assert needle in text
    assert "change significantly" in text.split("## Online RL")[1]  # 2 steps: the report says it did not learn
    plots = (
        "rm_loss.png",
        "rm_accuracy.png",
        "dpo_loss.png",
        "dpo_reward_margin.png",
        "win_rate.png",
        "grpo_reward.png",
    )
    for plot in plots:
        assert (tmp_path / "report" / plot).stat().st_size > 1000
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["win_rate"]["n"] == 4 and 0 <= summary["win_rate"]["value"] <= 1
    assert summary["greedy_accuracy_after"]["n"] == 4


# The embedded model under each kind of role the loop builds (a reference for KL in the reward and a
# critic, in ppo-critic; each reward source); every algorithm of the registry runs on a tiny model in
# tests/integration/test_online.py.
ONLINE_RUNS = {
    "grpo-math": ["algo=grpo", "task.name=arithmetic", "task.digits=1"],
    "ppo-critic": ["algo=ppo", "kl_coef=0.05", "kl_penalty=reward", "task.name=arithmetic"],
    "gsm8k": ["task.name=gsm8k", f"task.path={SHARED_DATA / 'gsm8k_train.jsonl'}", "task.limit=8"],
    "mbpp-unit-tests": [
        "task.name=mbpp",
        f"task.path={SHARED_DATA / 'mbpp_train.jsonl'}",
        "task.limit=8",
        "rewards=[{kind: unit_tests}]",
    ],
    "judge-pairwise": [
        "task.name=file",
        f"task.path={DEMO_DATA}",
        "task.on_bad_row=skip",
        "task.limit=8",
        "rewards=[{kind: judge, mode: pairwise}]",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ONLINE_RUNS)
def test_online_algorithms_and_rewards_on_the_embedded_model(tmp_path, name):
    rlxf(
        "online",
        f"output_dir={tmp_path}",
        "task.eval_count=2",
        "sampling.n=2",
        "sampling.max_new_tokens=8",
        "train.batch_size=2",
        "train.max_steps=1",
        *ONLINE_RUNS[name],
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 1 and "reward" in train[0] and "generate_tokens_per_second" in train[0]
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_the_default_dpo_leaves_the_chat_model_sensible(tmp_path):
    """The default learning rate (1e-6, TRL's) suits a full fine-tune of a chat model: after the
    default DPO on the shipped data the model still knows its capital."""
    from rlxf.data.templating import ChatEncoder
    from rlxf.eval.generate import generate
    from rlxf.models import load_causal_lm, load_tokenizer

    rlxf(
        "dpo",
        f"output_dir={tmp_path}",
        f"data.path={DEMO_DATA}",
        "data.on_bad_row=skip",
        "data.max_length=256",
        "data.eval_limit=8",
        "train.max_steps=6",
    )
    folder = str(tmp_path / "model")
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, max_length=96, max_prompt_length=64)
    prompt = [{"role": "user", "content": "Complete the sentence: The capital of France is"}]
    (answer,) = generate(load_causal_lm(folder).eval(), encoder, [prompt], max_new_tokens=16, temperature=0.0)
    assert "Paris" in answer.text, answer.text

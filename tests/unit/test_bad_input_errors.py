"""Every bad input a new user tries gives one line naming the field, before any heavy work."""

import json

import pytest

from rlxf.cli import main
from rlxf.config import TrainSection, load_config
from rlxf.recipes.dpo import DPOConfig


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    return path


def one_line_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    output = capsys.readouterr().err.strip()
    assert "Traceback" not in output, output
    return output.splitlines()[-1]  # progress lines may come first; the error is one line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dpo", "train.lr=0"], "train.lr must be a positive number, got 0.0"),
        (["dpo", "train.lr=-1e-5"], "train.lr must be a positive number"),
        (["dpo", "train.max_steps=-1"], "train.max_steps must be >= 0, got -1"),
        (["sft", "train.warmup_steps=-2"], "train.warmup_steps must be >= 0"),
        (["dpo", "train.max_steps=1"], "data.path is empty"),
        (
            ["dpo", "data.max_length=64", "data.max_prompt_length=64"],
            "max_prompt_length (64) must be below data.max_length (64)",
        ),
        (["grpo", "learning_rate=1e-6"], "did you mean train.lr? (TRL's learning_rate)"),
        (["dpo", "per_device_train_batch_size=2"], "did you mean train.batch_size?"),
        (["grpo", "num_generations=4"], "did you mean sampling.n?"),
        (["grpo", "max_completion_length=64"], "did you mean sampling.max_new_tokens?"),
        (["dpo", "loss_type=ipo"], "did you mean loss? (TRL's loss_type)"),
        (["dpo", "label_smoothing=0.1"], "did you mean loss_options?"),
        (["dpo", "train.learnig_rate=1e-5"], "did you mean train.lr?"),
        (["dpo", "bta=0.2"], "did you mean beta?"),
        (["grpo", "sampling.num_generations=4"], "did you mean sampling.n?"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_field(capsys, argv, message):
    assert message in one_line_error(capsys, *argv)


def test_a_missing_model_folder_is_one_line(capsys, pairs):
    error = one_line_error(capsys, "dpo", f"data.path={pairs}", "policy.name=./no/such/model", "train.max_steps=1")
    assert "model './no/such/model': no such folder" in error


def test_malformed_yaml_names_the_file_and_line(capsys, tmp_path):
    config = tmp_path / "dpo.yaml"
    config.write_text("train:\n  lr: 1e-5\n bad: [\n")
    assert f"{config}, line 3, column 2: not valid YAML" in one_line_error(capsys, "dpo", str(config))
    assert "does not exist" in one_line_error(capsys, "dpo", str(tmp_path / "absent.yaml"))


def test_a_reward_that_reads_a_missing_column_stops_before_anything_runs(capsys, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a", "topic": "x"}\n{"prompt": "b", "topic": "y"}\n')
    args = ["grpo", "task.name=file", f"task.path={prompts}", "task.eval_count=1", f"output_dir={tmp_path / 'run'}"]
    error = one_line_error(capsys, *args)
    assert f"reward math reads the column 'answer', which {prompts}, line 1 lacks (it has ['topic'])" in error
    rewards = tmp_path / "mine.py"
    rewards.write_text("def on_topic(completions, topic, wanted, **kwargs):\n    return [0.0] * len(completions)\n")
    error = one_line_error(capsys, *args, f"rewards=[{{kind: python, function: '{rewards}:on_topic'}}]")
    assert "reward python reads the column 'wanted'" in error
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written by a run that did not start


def test_the_prompt_budget_follows_max_length_unless_set():
    config = load_config(DPOConfig, None, ["data.max_length=128"])
    assert (config.data.max_prompt_length, config.data.prompt_limit) == (0, 64)
    assert load_config(DPOConfig, None, ["data.max_prompt_length=100"]).data.prompt_limit == 100


def test_a_field_set_after_construction_is_checked_and_the_old_value_kept():
    train = TrainSection()
    with pytest.raises(ValueError, match=r"TrainSection.lr = -1: train.lr must be a positive number"):
        train.lr = -1
    assert train.lr == 1e-6
    config = DPOConfig()
    with pytest.raises(ValueError, match="beta must be > 0"):
        config.beta = 0
    config.beta = 0.5
    assert config.beta == 0.5


def test_a_prompt_file_too_small_for_its_batch_is_one_line_before_any_model_loads(capsys, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {n}.", "answer": str(n)}) + "\n" for n in range(10)))
    # 10 rows: 4 held out (two fifths, not task.eval_count=100), 6 to train on, fewer than a batch of 16
    argv = ["grpo", f"output_dir={tmp_path / 'run'}", "task.name=file", f"task.path={prompts}", "train.batch_size=16"]
    assert main([*argv, "policy.name=/nowhere/model-never-loaded"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert "holding out 4 of 10 prompts (two fifths at most), not task.eval_count=100" in said[-2]
    assert said[-1].endswith("task file: 6 training prompts cannot fill one batch of train.batch_size=16 prompts")
    assert not (tmp_path / "run").exists()

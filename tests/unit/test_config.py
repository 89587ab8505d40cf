from dataclasses import dataclass, field

import pytest

from rlxf.config import ConfigError, DataSection, TrainSection, describe, field_docs, load_config, to_yaml
from rlxf.recipes.dpo import DPOConfig
from rlxf.recipes.reward_model import RewardModelConfig


def test_yaml_then_dotted_overrides_with_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: simpo\nbeta: 0.5\ntrain:\n  batch_size: 8\n  lr: 1.0e-5\n")
    config = load_config(
        DPOConfig,
        path,
        [
            "train.lr=3e-6",
            "policy.lora.rank=8",
            "loss_options={gamma: 0.3}",
            "data.path=x.jsonl",
            "train.scheduler=cosine",
        ],
    )
    assert (config.loss, config.beta, config.train.batch_size) == ("simpo", 0.5, 8)
    assert config.train.lr == 3e-6 and isinstance(config.train.lr, float)
    assert config.policy.lora.rank == 8 and config.loss_options == {"gamma": 0.3}
    # sections keep the recipe's own defaults for fields not mentioned
    assert config.data.max_length == DPOConfig().data.max_length == 512
    assert load_config(RewardModelConfig, None, ["data.path=y"]).train.batch_size == 16


def test_round_trip_through_yaml(tmp_path):
    config = load_config(DPOConfig, None, ["loss=simpo", "loss_options.gamma=0.7"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(DPOConfig, path) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=fast", "train.lr: expected float"),
        ("train.batch_size=2.5", "train.batch_size: expected int"),
        ("nope=1", "unknown field"),
        ("loss=magic", "loss must be one of"),
        ("train.scheduler=zigzag", "scheduler must be"),
        ("data.on_bad_row=ignore", "on_bad_row must be"),
        ("train.batch_size=6", None),
        ("novalue", "expected key=value"),
        ("loss_options={gamma: 1}", r"loss_options \['gamma'\] do not apply to dpo"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(override, message):
    if message is None:  # batch 6 with micro-batch 4 is not a multiple
        with pytest.raises(ConfigError, match="multiple of micro_batch_size"):
            load_config(DPOConfig, None, [override, "train.micro_batch_size=4"])
        return
    with pytest.raises(ConfigError, match=message):
        load_config(DPOConfig, None, [override])


def test_field_docs_feed_help():
    docs = field_docs(TrainSection)
    assert docs["lr"] == "Peak learning rate (AdamW)."
    lines = "\n".join(describe(DPOConfig()))
    assert "train.lr = 1e-06" in lines and "Peak learning rate" in lines and "policy.lora.rank = 0" in lines


def test_unions_and_lists():
    @dataclass
    class Custom:
        limit: int | None = None
        names: list[str] = field(default_factory=list)
        data: DataSection = field(default_factory=DataSection)

    config = load_config(Custom, None, ["limit=3", "names=[a, b]"])
    assert config.limit == 3 and config.names == ["a", "b"]
    assert load_config(Custom, None, ["limit=none"]).limit is None


def test_shipped_configs_load_into_their_commands():
    from pathlib import Path

    from rlxf.cli import COMMANDS

    classes = {name: getattr(__import__(module, fromlist=[cls]), cls) for name, (module, cls, *_) in COMMANDS.items()}
    command_of = {
        "dpo_hh": "dpo",
        "simpo_hh": "dpo",
        "rm_hh": "rm",
        "kto_hh": "kto",
        "demo": "demo",
        "grpo_arithmetic": "grpo",
        "grpo_gsm8k": "grpo",
    }
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert {p.stem for p in configs} == set(command_of)
    for path in configs:
        config = load_config(classes[command_of[path.stem]], path)
        assert config.output_dir.startswith("runs/"), path


def test_a_misspelled_or_mistyped_field_set_later_is_refused_with_what_was_meant():
    config = DPOConfig()
    with pytest.raises(AttributeError, match=r"TrainSection has no field 'learning_rate'; did you mean lr\?"):
        config.train.learning_rate = 1e-5
    with pytest.raises(ValueError, match=r"DPOConfig.beta must be a number, got '0.5'"):
        config.beta = "0.5"
    with pytest.raises(ValueError, match=r"TrainSection.max_steps must be an integer, got 2.5"):
        config.train.max_steps = 2.5
    with pytest.raises(ValueError, match=r"must be an integer, got True"):
        TrainSection(max_steps=True)
    config.beta, config.train.max_steps = 1, 3  # an integer is a number
    assert (config.beta, config.train.max_steps, config.train.lr) == (1, 3, 1e-6)

"""Resume that never lies: a folder holding a run with another config stops with what differs;
train.resume=never starts fresh beside it, force continues; a finished run run again rewrites
nothing; train.resume_from starts from a chosen checkpoint."""

import pytest
import torch

from rlxf.config import ConfigError, load_config
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.train.metrics import read_metrics


def dpo(folder, data, *extra):
    settings = [
        f"output_dir={folder}",
        "policy.name=tiny-llama",
        f"data.path={data}",
        "data.max_length=128",
        "train.max_steps=4",
        "train.batch_size=2",
        "train.save_every=2",
        "train.lr=1e-3",
        *extra,
    ]
    return train_dpo(load_config(DPOConfig, None, settings))


def test_another_config_in_a_run_folder_stops_with_the_differences_and_writes_nothing(tmp_path, small_hh):
    folder = tmp_path / "run"
    dpo(folder, small_hh)
    config_text, card = (folder / "config.yaml").read_text(), (folder / "model" / "README.md").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"another config \(beta: 0.1 → 0.5, train.lr: 0.001 → 0.002\)"):
        dpo(folder, small_hh, "beta=0.5", "train.lr=2e-3")
    assert (folder / "config.yaml").read_text() == config_text

    dpo(folder, small_hh)  # the same config: finished already, nothing trained and nothing rewritten
    assert (folder / "model" / "README.md").stat().st_mtime_ns == card
    assert (folder / "config.yaml").read_text() == config_text


def test_never_starts_fresh_in_a_subfolder_and_force_continues(tmp_path, small_hh):
    folder = tmp_path / "run"
    dpo(folder, small_hh)
    dpo(folder, small_hh, "beta=0.5", "train.resume=never")
    fresh = folder / "run-2"
    assert "beta: 0.5" in (fresh / "config.yaml").read_text() and (fresh / "model").is_dir()
    assert [r["step"] for r in read_metrics(fresh / "metrics.jsonl", "train")] == [1, 2, 3, 4]

    before, card = (folder / "config.yaml").read_text(), (folder / "model" / "README.md").read_text()
    dpo(folder, small_hh, "beta=0.5", "train.resume=force")  # finished: nothing trains, nothing is rewritten
    assert (folder / "config.yaml").read_text() == before and "beta: 0.1" in before
    assert (folder / "model" / "README.md").read_text() == card
    dpo(folder, small_hh, "train.max_steps=6", "train.resume=force")  # two more steps on the old run
    assert "max_steps: 6" in (folder / "config.yaml").read_text()
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl", "train")][-2:] == [5, 6]


def test_resume_from_a_chosen_checkpoint(tmp_path, small_hh):
    first = tmp_path / "first"
    dpo(first, small_hh, "train.keep_checkpoints=3")
    checkpoint = first / "checkpoints" / "checkpoint-2"
    assert checkpoint.is_dir()
    second = tmp_path / "second"
    dpo(second, small_hh, f"train.resume_from={checkpoint}")
    assert [r["step"] for r in read_metrics(second / "metrics.jsonl", "train")] == [3, 4]
    card = (second / "model" / "README.md").stat().st_mtime_ns
    dpo(second, small_hh, f"train.resume_from={checkpoint}")  # a restart goes on from its own checkpoint
    assert (second / "model" / "README.md").stat().st_mtime_ns == card
    with pytest.raises(ConfigError, match="is not a checkpoint folder"):
        dpo(tmp_path / "third", small_hh, f"train.resume_from={tmp_path}")


def test_each_checkpoint_opens_with_from_pretrained_and_only_the_last_k_are_kept(tmp_path, small_hh):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    full = tmp_path / "full"
    dpo(full, small_hh, "train.max_steps=12", "train.save_every=1", "train.keep_checkpoints=3")
    kept = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert kept == ["checkpoint-10", "checkpoint-11", "checkpoint-12"]  # by step: 10 after 9, not after 1
    model = AutoModelForCausalLM.from_pretrained(full / "checkpoints" / "checkpoint-12")
    assert AutoTokenizer.from_pretrained(full / "checkpoints" / "checkpoint-12") is not None
    final = AutoModelForCausalLM.from_pretrained(full / "model")
    for (name, saved), (_, trained) in zip(model.state_dict().items(), final.state_dict().items()):
        assert torch.equal(saved, trained), name  # the last checkpoint holds the final weights

    lora = tmp_path / "lora"
    dpo(lora, small_hh, "policy.lora.rank=4")
    base = AutoModelForCausalLM.from_pretrained(full / "model")
    adapted = PeftModel.from_pretrained(base, lora / "checkpoints" / "checkpoint-4")
    assert any("lora" in name for name, _ in adapted.named_parameters())


@pytest.mark.parametrize("recipe", ["dpo", "kto"])
def test_reference_log_probs_are_computed_only_for_the_examples_the_steps_read(tmp_path, small_hh, monkeypatch, recipe):
    import rlxf.recipes.common as common
    import rlxf.recipes.dpo as dpo_recipe
    import rlxf.recipes.kto as kto_recipe

    module, config_class, train = {
        "dpo": (dpo_recipe, DPOConfig, train_dpo),
        "kto": (kto_recipe, kto_recipe.KTOConfig, kto_recipe.train_kto),
    }[recipe]
    real, sizes = common.group_logps, {}

    def counting(model, groups, **kwargs):
        sizes[kwargs.get("desc")] = len(groups)
        return real(model, groups, **kwargs)

    def run(folder):
        settings = [f"output_dir={folder}", "policy.name=tiny-llama", f"data.path={small_hh}", "data.max_length=128"]
        train(load_config(config_class, None, [*settings, "train.max_steps=3", "train.batch_size=2", "train.lr=1e-3"]))
        return [r["loss"] for r in read_metrics(folder / "metrics.jsonl", "train")]

    monkeypatch.setattr(common, "group_logps", counting)
    subset = run(tmp_path / "subset")
    assert sizes["reference log-probs (train)"] <= 3 * 2  # three steps of two examples, not the whole file
    monkeypatch.setattr(module, "used_examples", lambda count, train: list(range(count)))
    everything = run(tmp_path / "everything")
    assert sizes["reference log-probs (train)"] > 6
    assert subset == pytest.approx(everything, abs=1e-6)  # the same run, less start-up

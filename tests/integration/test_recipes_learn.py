"""Every recipe runs a few steps on a tiny model, and its metric moves the right way."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlxf.config import load_config
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.recipes.kto import KTOConfig, mismatched_partners, train_kto
from rlxf.recipes.reward_model import RewardModelConfig, train_reward_model
from rlxf.recipes.sft import SFTConfig, train_sft
from rlxf.train.metrics import read_metrics


def train_rows(output_dir):
    return [r for r in read_metrics(output_dir / "metrics.jsonl") if r["split"] == "train"]


def first_and_last(rows, key, k=3):
    return sum(r[key] for r in rows[:k]) / k, sum(r[key] for r in rows[-k:]) / k


TINY_DATA = ["data.max_length=160", "data.max_prompt_length=96", "data.eval_fraction=0.25", "train.threads=2"]
FEW_PAIRS = ["data.limit=8"]  # a handful of pairs seen many times: learning shows within seconds


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "cpl"])
def test_preference_losses_fall_and_accuracy_rises(tmp_path, small_hh, loss):
    options = {"simpo": ["loss_options={gamma: 0.5}", "beta=2.0"], "cpl": ["logps=mean", "beta=2.0"]}.get(loss, [])
    config = load_config(
        DPOConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "policy.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            *FEW_PAIRS,
            f"loss={loss}",
            "train.max_steps=30",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.scheduler=constant",
            *options,
        ],
    )
    train_dpo(config)
    rows = train_rows(tmp_path)
    start, end = first_and_last(rows, "loss")
    assert end < 0.6 * start, (start, end)
    accuracy_start, accuracy_end = first_and_last(rows, "rewards/accuracy")
    assert accuracy_end >= 0.9 and accuracy_end > accuracy_start
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "model" / "README.md").exists()
    card = (tmp_path / "model" / "README.md").read_text()
    assert "rlxf dpo" in card and str(small_hh) in card and "preference_accuracy" in card


def test_ipo_uses_per_token_mean_log_probs_unless_told_to_sum(tmp_path, small_hh):
    """TRL's IPO (confirmed by the IPO authors): h from log-probs averaged over each completion's
    tokens. At the first step the policy is the reference, so the loss is (0 - 1/(2β))² = 1/(4β²)
    either way, but the logged policy log-probs are per token (about -log 259 = -5.56 for a random
    byte-level model) or summed over completions of dozens of tokens."""
    logged = {}
    for form in ("auto", "sum"):
        out = tmp_path / form
        overrides = [f"output_dir={out}", "policy.name=tiny-llama", f"data.path={small_hh}", *TINY_DATA, *FEW_PAIRS]
        config = load_config(
            DPOConfig, None, [*overrides, "loss=ipo", "beta=0.5", "train.max_steps=1", f"logps={form}"]
        )
        assert config.length_normalized == (form == "auto")
        train_dpo(config)
        logged[form] = train_rows(out)[0]
        assert logged[form]["loss"] == pytest.approx(1.0, rel=1e-4)
    assert -7.0 < logged["auto"]["logps/chosen"] < -4.5
    assert logged["sum"]["logps/chosen"] < 5 * logged["auto"]["logps/chosen"]


def test_reference_logps_are_computed_once_and_reused(tmp_path, small_hh, monkeypatch):
    args = [
        f"output_dir={tmp_path}",
        "policy.name=tiny-llama",
        f"data.path={small_hh}",
        *TINY_DATA,
        "train.max_steps=1",
        "train.batch_size=2",
    ]
    train_dpo(load_config(DPOConfig, None, args))
    import rlxf.recipes.common as common

    # Same model, tokens and pairs read -> cache hit: a second run must not compute reference log-probs.
    calls = []

    def counted(model, groups, **kwargs):
        calls.append(kwargs.get("desc"))
        completions = sum(len(completions) for _, completions in groups)
        return torch.zeros(completions), torch.ones(completions, dtype=torch.long)

    monkeypatch.setattr(common, "group_logps", counted)
    import shutil

    shutil.rmtree(tmp_path / "model")
    train_dpo(load_config(DPOConfig, None, args + ["beta=0.2", "train.resume=force"]))
    assert not any(d and d.startswith("reference") for d in calls), calls
    # More steps read more pairs: the reference is computed again, for the pairs the longer run reads.
    train_dpo(load_config(DPOConfig, None, args + ["train.max_steps=2", "train.resume=force"]))
    assert "reference log-probs (train)" in calls, calls


def test_reward_model_learns_on_tiny_llama(tmp_path, small_hh):
    config = load_config(
        RewardModelConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            *FEW_PAIRS,
            "train.max_steps=30",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.scheduler=constant",
        ],
    )
    results = train_reward_model(config)
    rows = train_rows(tmp_path)
    start, end = first_and_last(rows, "loss")
    assert end < 0.5 * start
    assert {"accuracy", "accuracy_interval", "pairs"} <= set(results["held_out"])
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["held_out"]["pairs"] == results["held_out"]["pairs"] > 0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "model" / "rlxf.json").read_text())["max_length"] == 160


def test_reward_model_with_lora_trains_adapters_and_head(tmp_path, small_hh):
    config = load_config(
        RewardModelConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name=tiny-llama",
            "model.lora.rank=4",
            f"data.path={small_hh}",
            *TINY_DATA,
            *FEW_PAIRS,
            "train.max_steps=30",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.scheduler=constant",
        ],
    )
    train_reward_model(config)
    start, end = first_and_last(train_rows(tmp_path), "loss")
    assert end < 0.5 * start
    from rlxf.models import load_reward_model

    trained = load_reward_model(str(tmp_path / "model"))
    assert not torch.equal(trained.score.weight, load_reward_model("tiny-llama").score.weight)


def test_sft_lowers_completion_nll(tmp_path, small_hh):
    config = load_config(
        SFTConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "policy.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            "train.max_steps=20",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.eval_every=10",
        ],
    )
    results = train_sft(config)
    start, end = first_and_last(train_rows(tmp_path), "loss")
    assert end < 0.7 * start
    assert results["held_out"]["nll_per_token"] < start


def test_kto_on_pairs_split_into_binary_feedback(tmp_path, small_hh):
    config = load_config(
        KTOConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "policy.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            *FEW_PAIRS,
            "train.max_steps=30",
            "train.batch_size=8",
            "train.lr=3e-3",
            "train.scheduler=constant",
        ],
    )
    results = train_kto(config)
    start, end = first_and_last(train_rows(tmp_path), "loss")
    assert end < 0.8 * start
    assert results["held_out"]["examples"] > 0
    groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e"]  # pairs split in two share a prompt group
    partners = mismatched_partners(groups, seed=0)
    assert all(groups[p] != groups[i] for i, p in enumerate(partners))
    assert mismatched_partners(["same"] * 3, seed=0) == [0, 1, 2]


def test_lora_trains_only_adapters_and_saves_a_merged_model(tmp_path, small_hh):
    from rlxf.models.tiny import tiny_llama

    config = load_config(
        DPOConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "policy.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            "policy.lora.rank=4",
            "train.max_steps=3",
            "train.batch_size=4",
            "train.lr=1e-2",
        ],
    )
    train_dpo(config)
    merged = load_file(tmp_path / "model" / "model.safetensors")
    base = tiny_llama().state_dict()
    changed = [k for k, v in merged.items() if not torch.equal(v, base[k])]
    assert changed and all("proj" in k for k in changed), changed  # only adapted linear layers moved
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").exists()

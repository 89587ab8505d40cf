"""Per-example weights (a labeler's reliability, from `rlxf feedback export`): read from the
data, scaled to a mean of 1, multiplied into each example's loss."""

import json

import pytest
import torch

from rlxf.config import load_config
from rlxf.data import DataError, read_preferences
from rlxf.data.records import Preference
from rlxf.recipes.common import example_weights
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.train.metrics import read_metrics


def test_weights_are_scaled_to_a_mean_of_one():
    # weights 2, 1, 1: mean 4/3 -> 1.5, 0.75, 0.75 (the first example counts as two)
    records = [Preference([], "a", "b", weight=w) for w in (2.0, 1.0, 1.0)]
    assert example_weights(records).tolist() == pytest.approx([1.5, 0.75, 0.75])


def weighted_copy(source, target, weight_of):
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    target.write_text("".join(json.dumps({**row, "weight": weight_of(i)}) + "\n" for i, row in enumerate(rows)))
    return target


def test_a_weight_must_be_a_positive_number(tmp_path, small_hh):
    bad = weighted_copy(small_hh, tmp_path / "bad.jsonl", lambda i: 0 if i == 2 else 1)
    with pytest.raises(DataError, match=r"bad.jsonl, line 3, field 'weight': expected a positive number, got 0"):
        read_preferences(bad)
    assert read_preferences(small_hh)[0][0].weight == 1.0


def dpo_losses(tmp_path, data, name):
    overrides = [
        f"output_dir={tmp_path / name}",
        "policy.name=tiny-llama",
        f"data.path={data}",
        "data.max_length=160",
        "data.max_prompt_length=96",
        "data.limit=8",
        "train.batch_size=4",
        "train.max_steps=3",
        "train.lr=1e-3",
    ]
    train_dpo(load_config(DPOConfig, None, overrides))
    return [row["loss"] for row in read_metrics(tmp_path / name / "metrics.jsonl", "train")]


def test_equal_weights_train_as_none_and_unequal_weights_change_the_loss(tmp_path, small_hh):
    plain = dpo_losses(tmp_path, small_hh, "plain")
    equal = dpo_losses(tmp_path, weighted_copy(small_hh, tmp_path / "equal.jsonl", lambda i: 3.0), "equal")
    unequal = dpo_losses(tmp_path, weighted_copy(small_hh, tmp_path / "unequal.jsonl", lambda i: 1 + i % 3), "unequal")
    assert equal == pytest.approx(plain, rel=1e-6)
    assert unequal[0] != pytest.approx(plain[0], rel=1e-4)
    assert torch.isfinite(torch.tensor(unequal)).all()

"""Preference models over trajectory segments: the partial-return and regret features and their
maximum-likelihood fit by hand, cross-validation's conventions, CPL's states and loss by hand, the
paper's qualitative claim on the real labels, and errors that name the file."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rlxf.segments.command import DEFAULT_DATA_DIR, SegmentsConfig, run_segments
from rlxf.segments.cpl import cpl_logits, segment_log_probs, segment_steps, soft_cpl_loss, train_cpl
from rlxf.segments.data import condition_paths, load_condition, load_conditions
from rlxf.segments.evaluate import accuracy, fold_indices, held_out_logits, logistic_results
from rlxf.segments.models import (
    fit_scale,
    mean_cross_entropy,
    partial_return_feature,
    regret_feature,
    soft_cross_entropy,
)

DATA = Path(DEFAULT_DATA_DIR)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (delivery_human_prefs) is not here")


def a(*values):
    return np.array(values, dtype=np.float64)


# --- the two features -------------------------------------------------------------------------


@needs_data
def test_question_control_row_0_features_by_hand():
    # left: (2,9) west x3 through mud, mud, blank: PR = -5, V*(s_T) = 39; right: (2,9) -> (3,9) -> (4,9)
    # -> (4,8): PR = -3, V*(s_T) = 45; V*(s_0) = 44 for both. X = [-3 - -5, 44 - 44, 45 - 39] = [2, 0, 6].
    pairs = load_condition(DATA, "Question-Control")
    assert pairs.features[0].tolist() == [2.0, 0.0, 6.0] and pairs.labels[0] == 1.0
    # regret = V*(s_0) - (PR + V*(s_T)): left 44 - (-5 + 39) = 10, right 44 - (-3 + 45) = 2; 10 - 2 = 8
    assert regret_feature(pairs.features[:1]).tolist() == [8.0]
    assert partial_return_feature(pairs.features[:1]).tolist() == [2.0]
    assert (len(pairs), pairs.ties) == (442, 46)


def test_regret_feature_subtracts_the_start_value_and_adds_the_end_value():
    # ΔPR = 1, ΔV*(s_0) = 3, ΔV*(s_T) = 5: regret(left) - regret(right) = 1 + 5 - 3 = 3
    assert regret_feature(np.array([[1.0, 3.0, 5.0], [-2.0, 0.5, 0.0]])).tolist() == [3.0, -2.5]


# --- likelihood and its maximum ---------------------------------------------------------------


def test_soft_cross_entropy_by_hand_and_stable_far_out():
    # z = 1, y = 1: log(1 + e^-1) = 0.313262; a tie: ½(0.313262 + 1.313262) = 0.813262
    assert soft_cross_entropy(a(1.0, 1.0), a(1.0, 0.5)).tolist() == pytest.approx([0.313262, 0.813262], abs=1e-6)
    # clipping σ would cap this loss; the exact value is log(1 + e^800) = 800
    assert soft_cross_entropy(a(-800.0), a(1.0)).tolist() == pytest.approx([800.0])
    assert mean_cross_entropy(0.5, a(2.0, -2.0), a(1.0, 0.0)) == pytest.approx(0.313262, abs=1e-6)


def test_fit_scale_matches_closed_forms():
    # every feature 2, three of four labels 1: σ(2s) = 3/4, s = ln(3)/2
    assert fit_scale(a(2, 2, 2, 2), a(1, 1, 1, 0)) == pytest.approx(math.log(3) / 2, abs=1e-10)
    # features (1, 1, -1, -1), labels (1, ½, 0, ½): the slope is 4σ(s) - 3, zero at s = ln 3
    assert fit_scale(a(1, 1, -1, -1), a(1, 0.5, 0, 0.5)) == pytest.approx(math.log(3), abs=1e-10)
    # the majority disagrees with the feature: s = -ln 3
    assert fit_scale(a(1, 1, 1, 1), a(0, 0, 0, 1)) == pytest.approx(-math.log(3), abs=1e-10)
    assert fit_scale(a(0, 0), a(1, 0)) == 0.0
    # separable labels: no maximum, |s| stops at the bound
    assert fit_scale(a(1, 2), a(1, 1), max_scale=50.0) == 50.0


def test_fit_scale_beats_a_fine_grid():
    rng = np.random.default_rng(3)
    for _ in range(5):
        feature = rng.integers(-20, 21, 300).astype(float)
        labels = np.where(rng.random(300) < 1 / (1 + np.exp(-0.3 * feature)), 1.0, 0.0)
        labels[rng.random(300) < 0.15] = 0.5
        grid = np.linspace(-2, 2, 40001)  # step 1e-4
        losses = [mean_cross_entropy(s, feature, labels) for s in grid]
        scale = fit_scale(feature, labels)
        assert abs(scale - grid[int(np.argmin(losses))]) <= 1e-4
        assert mean_cross_entropy(scale, feature, labels) <= min(losses) + 1e-12


# --- cross-validation -------------------------------------------------------------------------


def test_accuracy_leaves_out_ties_and_gives_half_credit_to_a_zero_logit():
    # strict pairs: 0 right (1), 1 wrong (0), 2 zero logit (½), 4 right (1); pair 3 is a tie
    assert accuracy(a(2, -1, 0, 3, -2), a(1, 1, 1, 0.5, 0)) == pytest.approx(2.5 / 4)


def test_folds_partition_the_pairs_and_each_is_predicted_without_itself():
    folds = fold_indices(10, 3, seed=0)
    assert [len(f) for f in folds] == [4, 3, 3]
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert all(np.array_equal(x, y) for x, y in zip(folds, fold_indices(10, 3, seed=0)))
    seen = []

    def fit_and_predict(train, test):
        assert not set(train) & set(test) and len(train) + len(test) == 10
        seen.append(test)
        return np.full(len(test), float(len(train)))

    assert held_out_logits(np.zeros(10), folds, fit_and_predict).tolist() == [
        6.0 if i in folds[0] else 7.0 for i in range(10)
    ]
    with pytest.raises(ValueError, match="folds must be between 2 and the 3 pairs"):
        fold_indices(3, 4, seed=0)


def test_held_out_cross_entropy_is_worse_than_in_sample_on_noise():
    rng = np.random.default_rng(0)
    feature, labels = rng.normal(size=200), rng.choice(a(0, 0.5, 1), size=200)
    results = logistic_results(feature, labels, fold_indices(200, 10, seed=0))
    assert results["ce_cv"] > results["ce_full"]
    assert results["ce_full"] == pytest.approx(mean_cross_entropy(results["scale"], feature, labels))


@needs_data
def test_regret_fits_regret_trained_and_partial_return_fits_pr_trained_held_out():
    """Knox et al.'s claim, as Hatgis-Kessell et al.'s conditions bend it: raters trained on regret
    follow the regret model and raters trained on partial return the partial-return model."""
    results = {}
    for pairs in load_conditions(DATA, ["Regret-Trained", "Pr-Trained"]):
        folds = fold_indices(len(pairs), 10, seed=0)
        results[pairs.condition] = {
            name: logistic_results(feature(pairs.features), pairs.labels, folds)
            for name, feature in (("pr", partial_return_feature), ("regret", regret_feature))
        }
    regret_trained, pr_trained = results["Regret-Trained"], results["Pr-Trained"]
    assert regret_trained["regret"]["ce_cv"] < regret_trained["pr"]["ce_cv"] - 0.1  # .366 against .537
    assert pr_trained["pr"]["ce_cv"] < pr_trained["regret"]["ce_cv"] - 0.02  # .518 against .546
    assert regret_trained["regret"]["accuracy"] > regret_trained["pr"]["accuracy"]
    # in-sample, as the research note found by grid search (an exact fit can only be as low)
    assert regret_trained["regret"]["ce_full"] == pytest.approx(0.3648, abs=5e-5)
    assert pr_trained["pr"]["ce_full"] == pytest.approx(0.4931, abs=5e-5)


# --- CPL --------------------------------------------------------------------------------------


def test_segment_states_are_rebuilt_with_edge_clipping_and_padding():
    segments = np.array(
        [
            [[[2, 9], [0, -1], [0, -1], [0, -1]], [[2, 9], [1, 0], [1, 0], [0, -1]]],  # Question-Control row 0
            [[[0, 9], [-1, 0], [0, 1], [1, 0]], [[8, 8], [0, 1], [0, 0], [0, 0]]],  # two bumps; a padded end
        ]
    )
    cells, actions = segment_steps(segments)
    # cell = 10x + y where each move is taken; moves (-1,0)=0, (1,0)=1, (0,-1)=2, (0,1)=3
    assert cells.tolist() == [[[29, 28, 27], [29, 39, 49]], [[9, 9, 9], [88, 89, 89]]]
    assert actions.tolist() == [[[2, 2, 2], [1, 1, 2]], [[0, 3, 1], [3, -1, -1]]]


def test_cpl_loss_on_one_pair_by_hand():
    # α = 0.1, Σ log π⁺ = -2, Σ log π⁻ = -4: S⁺ = -0.2, S⁻ = -0.4
    log_probs = torch.tensor([[-4.0, -2.0]], dtype=torch.float64)  # (left, right); right preferred
    right = torch.tensor([1.0], dtype=torch.float64)
    # λ = ½: softplus(½·(-0.4) + 0.2) = log 2;  λ = 1: softplus(-0.2) = 0.598139
    assert soft_cpl_loss(log_probs, right, alpha=0.1, bias=0.5).item() == pytest.approx(math.log(2), abs=1e-6)
    assert soft_cpl_loss(log_probs, right, alpha=0.1, bias=1.0).item() == pytest.approx(0.598139, abs=1e-6)
    # a tie is the mean of both orders: ½(softplus(-0.2) + softplus(0.2)) = ½(0.598139 + 0.798139)
    tie = torch.tensor([0.5], dtype=torch.float64)
    assert soft_cpl_loss(log_probs, tie, alpha=0.1, bias=1.0).item() == pytest.approx(0.698139, abs=1e-6)


def test_cpl_scores_segments_under_the_tabular_policy_by_hand():
    # uniform π: 3 moves score 3 log ¼ = -4.158883; a padded segment with 1 move scores log ¼
    cells, actions = segment_steps(np.array([[[[0, 0], [1, 0], [1, 0], [1, 0]], [[5, 5], [0, 1], [0, 0], [0, 0]]]]))
    sums = segment_log_probs(torch.zeros(100, 4, dtype=torch.float64), torch.as_tensor(cells), torch.as_tensor(actions))
    assert sums[0].tolist() == pytest.approx([3 * math.log(0.25), math.log(0.25)])
    # the longer left segment preferred, λ = 1, α = 1: softplus(S_r - S_l) = log(1 + e^{2 log 4}) = log 17
    loss = soft_cpl_loss(sums, torch.tensor([0.0], dtype=torch.float64), alpha=1.0, bias=1.0)
    assert loss.item() == pytest.approx(math.log(17))
    # λ = ½, equal scores S = 3 log ¼: softplus(-½ S) = log(1 + e^{log 8}) = log 9
    same = torch.full((1, 2), 3 * math.log(0.25), dtype=torch.float64)
    assert soft_cpl_loss(same, torch.tensor([1.0], dtype=torch.float64), alpha=1.0, bias=0.5).item() == pytest.approx(
        math.log(9)
    )


def test_cpl_with_bias_one_is_the_cross_entropy_of_its_preference_probability():
    generator = torch.Generator().manual_seed(0)
    log_probs = -torch.rand(6, 2, generator=generator, dtype=torch.float64) * 5
    labels = torch.tensor([0, 0.5, 1, 1, 0, 0.5], dtype=torch.float64)
    logits = 0.3 * (log_probs[:, 1] - log_probs[:, 0])
    expected = soft_cross_entropy(logits.numpy(), labels.numpy())
    assert soft_cpl_loss(log_probs, labels, alpha=0.3, bias=1.0).numpy() == pytest.approx(expected, abs=1e-12)


def test_cpl_learns_the_action_the_labels_prefer_and_predicts_held_out_pairs():
    # from every start, a segment moving east three times (right) is preferred to one moving west
    starts = [(x, y) for x in range(10) for y in range(3, 7)]
    segments = np.array([[[s, [0, -1], [0, -1], [0, -1]], [s, [0, 1], [0, 1], [0, 1]]] for s in starts])
    cells, actions = segment_steps(segments)
    labels = np.ones(len(starts))
    train, test = np.arange(len(starts)) % 2 == 0, np.arange(len(starts)) % 2 == 1
    policy = train_cpl(cells[train], actions[train], labels[train], alpha=1.0, bias=1.0, steps=50, lr=1.0)
    held_out = cpl_logits(policy, cells[test], actions[test], alpha=1.0)
    assert (held_out > 1.0).all()  # the held-out pairs share cells with the training pairs
    assert torch.softmax(policy, -1)[45].argmax().item() == 3  # east, (0, 1), in a trained cell
    assert torch.equal(policy[0], torch.zeros(4, dtype=torch.float64))  # cell (0, 0) is never visited


# --- the command and bad input ----------------------------------------------------------------


@needs_data
def test_run_segments_writes_the_table(tmp_path, capsys):
    config = SegmentsConfig(output_dir=str(tmp_path), conditions=["Question-Control"], cpl_steps=5)
    results = run_segments(config)
    assert f"report: {tmp_path / 'report.md'}" in capsys.readouterr().out
    row = json.loads((tmp_path / "results.json").read_text())["conditions"]["Question-Control"]
    assert row == results["conditions"]["Question-Control"]
    assert (row["n"], row["ties"]) == (442, 46)
    assert row["regret"]["ce_cv"] < row["partial_return"]["ce_cv"] < math.log(2)
    assert 0.5 < row["cpl"]["accuracy"] <= 1 and row["cpl"]["ce_cv"] < math.log(2)  # 5 steps barely move it
    report = (tmp_path / "report.md").read_text()
    pr, regret = row["partial_return"], row["regret"]
    assert f"| Question-Control | 442 | 46 | {pr['ce_full']:.4f} / {pr['ce_cv']:.4f} / {pr['accuracy']:.3f} |" in report
    assert f"**{regret['ce_cv']:.4f}**" in report


def test_config_refuses_unknown_conditions_and_bad_cpl_settings():
    with pytest.raises(ValueError, match="conditions must be some of"):
        SegmentsConfig(conditions=["Regret-Traned"])
    with pytest.raises(ValueError, match="cpl_bias must be in"):
        SegmentsConfig(cpl_bias=0.0)
    with pytest.raises(ValueError, match="folds must be at least 2"):
        SegmentsConfig(folds=1)


def write_condition(folder, features, labels, segments, condition="Question-Control"):
    paths = condition_paths(folder, condition)
    for kind, array in (("X", features), ("Y", labels), ("segment_pairs", segments)):
        np.save(paths[kind], array)
    return paths


GOOD_PAIR = [[[2, 9], [0, -1], [0, -1], [0, -1]], [[2, 9], [1, 0], [1, 0], [0, -1]]]


def test_bad_files_are_errors_that_name_them(tmp_path):
    features, labels, segments = np.array([[2.0, 0, 6]] * 3), a(1, 0.5, 0), np.array([GOOD_PAIR] * 3)
    paths = write_condition(tmp_path, features, labels, segments)
    assert len(load_condition(tmp_path, "Question-Control")) == 3  # so each error below is the one change
    paths["X"].unlink()
    with pytest.raises(ValueError, match=re.escape(str(paths["X"])) + ": file not found"):
        load_condition(tmp_path, "Question-Control")
    paths["X"].write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=re.escape(str(paths["X"])) + ": not a readable .npy array"):
        load_condition(tmp_path, "Question-Control")
    write_condition(tmp_path, features[:2], labels, segments)
    with pytest.raises(ValueError, match=re.escape(str(paths["X"])) + r": shape \(2, 3\), expected \(3, 3\)"):
        load_condition(tmp_path, "Question-Control")
    write_condition(tmp_path, features, a(1, 0.3, 0), segments)
    with pytest.raises(ValueError, match=re.escape(str(paths["Y"])) + ": row 1 is 0.3, expected 0, 0.5 or 1"):
        load_condition(tmp_path, "Question-Control")
    bad_move = np.array([GOOD_PAIR] * 3)
    bad_move[2, 1, 3] = [2, 0]
    write_condition(tmp_path, features, labels, bad_move)
    with pytest.raises(ValueError, match=re.escape(str(paths["segment_pairs"])) + ": row 2 has a move that is none of"):
        load_condition(tmp_path, "Question-Control")
    move_after_padding = np.array([GOOD_PAIR] * 3)
    move_after_padding[0, 0, 2] = [0, 0]
    write_condition(tmp_path, features, labels, move_after_padding)
    with pytest.raises(
        ValueError, match=re.escape(str(paths["segment_pairs"])) + ": row 0 has a move after the padding"
    ):
        load_condition(tmp_path, "Question-Control")
    off_board = np.array([GOOD_PAIR] * 3)
    off_board[1, 0, 0] = [10, 0]
    write_condition(tmp_path, features, labels, off_board)
    with pytest.raises(
        ValueError, match=re.escape(str(paths["segment_pairs"])) + ": row 1 has a start cell outside 0-9"
    ):
        load_condition(tmp_path, "Question-Control")
    with pytest.raises(ValueError, match="unknown conditions"):
        load_conditions(tmp_path, ["Regret-Traned"])

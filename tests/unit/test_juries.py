"""Aggregating several judges' ratings (UltraFeedback's mean, a jury's majority, one aspect),
UltraFeedback's binarization, and agreement with people — against numbers worked by hand."""

import math
import random

import numpy as np
import pytest

from rlxf.eval.juries import agreement, binarize, candidate_scores, panel_agreement, winner

NAN = math.nan
# (judges, aspects, candidates): judge 0 rated everything, judge 1 only aspect 0 (and tied there)
RATINGS = np.array([[[4, 2], [5, NAN]], [[3, 3], [NAN, NAN]]], dtype=float)
ASPECTS = ["helpfulness", "honesty"]


def test_mean_is_over_the_ratings_that_rate_every_candidate():
    # complete cells: judge 0 aspect 0 [4, 2] and judge 1 aspect 0 [3, 3]; judge 0's honesty [5, ?] is
    # left out for both candidates -> (4 + 3) / 2 = 3.5 and (2 + 3) / 2 = 2.5
    assert candidate_scores(RATINGS, "mean", ASPECTS).tolist() == [3.5, 2.5]


def test_majority_counts_each_judges_own_first_choice():
    # judge 0's complete aspect: 4 vs 2 -> votes 0; judge 1's: 3 vs 3 -> tied, no vote
    assert candidate_scores(RATINGS, "majority", ASPECTS).tolist() == [1.0, 0.0]
    # a judge that rated one candidate and not the other casts no vote (the other is not a loser)
    half = np.array([[[2.0, NAN]], [[1.0, NAN]]])
    assert (
        np.isnan(candidate_scores(half, "majority", ["a"])).all()
        and np.isnan(candidate_scores(half, "mean", ["a"])).all()
    )
    nobody = np.full((2, 1, 3), NAN)
    assert np.isnan(candidate_scores(nobody, "majority", ["helpfulness"])).all()


def test_one_aspect_is_its_mean_over_judges():
    assert candidate_scores(RATINGS, "aspect:helpfulness", ASPECTS).tolist() == [3.5, 2.5]  # (4+3)/2, (2+3)/2
    assert np.isnan(candidate_scores(RATINGS, "aspect:honesty", ASPECTS)).all()  # nobody rated both
    with pytest.raises(ValueError, match="aggregate must be"):
        candidate_scores(RATINGS, "aspect:style", ASPECTS)


def test_winner_names_ties_and_unrated():
    assert winner(np.array([1.0, 3.0, 2.0])) == 1
    assert winner(np.array([3.0, 3.0, 2.0])) == "tie"
    assert winner(np.array([3.0, NAN])) is None


def test_binarize_picks_the_best_and_a_strictly_lower_one_at_random():
    rng = random.Random(0)
    drawn = {binarize(np.array([5.0, 4.0, 4.0, 1.0]), rng) for _ in range(200)}
    assert drawn == {(0, 1), (0, 2), (0, 3)}  # every lower one, never the best itself
    assert binarize(np.array([2.0, 2.0]), rng) is None  # all tied: no pair
    assert binarize(np.array([5.0, 5.0, 1.0]), rng) is None  # the top is shared
    assert binarize(np.array([5.0, NAN]), rng) is None
    assert binarize(np.array([5.0]), rng) is None  # nothing to reject


def test_agreement_by_hand():
    verdicts = [0, 1, "tie", None, 0]
    people = [0, 0, "tie", 1, None]
    result = agreement(verdicts, people)
    # compared: items 0-2; equal on 0 and 2 -> 2/3; people decided items 0 and 1 -> 1/2
    # kappa: p_o = 2/3; source labels {0, 1, tie} once each, people {0: 2, tie: 1}
    # p_e = (1*2 + 1*0 + 1*1) / 9 = 1/3 -> (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert result["compared"] == 3 and result["unanswered"] == 1 and result["decided"] == 2
    assert result["agreement"] == pytest.approx(2 / 3)
    assert result["accuracy_on_decided"] == pytest.approx(0.5)
    assert result["kappa"] == pytest.approx(0.5)
    assert agreement([None], [0])["agreement"] is None


def test_panel_agreement_between_judges():
    kappas = panel_agreement({"a": [0, 1, 0, 1], "b": [0, 1, 1, None], "c": [0, 1, 0, 1]})
    assert kappas["a | c"] == pytest.approx(1.0)
    # a vs b on items 0-2: labels a [0,1,0], b [0,1,1]; p_o = 2/3, p_e = (2*1 + 1*2)/9 = 4/9 -> (2/3-4/9)/(5/9) = 0.4
    assert kappas["a | b"] == pytest.approx(0.4)


def test_a_jury_of_independent_judges_agrees_with_people_more_than_any_one_of_them():
    """The reason for several judges (Verga et al. 2024): three judges, each right 70% of the time
    and wrong independently, vote; the majority is right 0.7³ + 3·0.7²·0.3 = 78.4% of the time."""
    rng = np.random.default_rng(0)
    items, people = 3000, rng.integers(0, 2, 3000)
    right = rng.random((3, items)) < 0.7
    picks = np.where(right, people, 1 - people)  # each judge's choice per item
    ratings = [np.array([[[5.0, 1.0] if pick == 0 else [1.0, 5.0]] for pick in picks[:, i]]) for i in range(items)]
    truth = people.tolist()
    singles = [
        agreement([winner(candidate_scores(r[j : j + 1], "mean", ["a"])) for r in ratings], truth) for j in range(3)
    ]
    jury = agreement([winner(candidate_scores(r, "majority", ["a"])) for r in ratings], truth)
    assert max(s["agreement"] for s in singles) < 0.72
    assert jury["agreement"] == pytest.approx(0.784, abs=0.02)
    # averaging scores of 5/1 ratings is the same vote here
    mean = agreement([winner(candidate_scores(r, "mean", ["a"])) for r in ratings], truth)
    assert mean["agreement"] == jury["agreement"]

"""The over-optimization watch and best-of-n curve against numbers worked by hand."""

import math
import random

import pytest
import torch

from rlxf.eval.overoptimization import (
    best_of_n_curve,
    best_of_n_kl,
    distinct_n,
    gold_fall,
    moving_average,
    parting_margin,
    parting_step,
    step_noise,
)


def test_distinct_n_counts_unique_ngrams_over_all():
    # bigrams: (a b) (b a) (a b) | (a b) → 4 in all, 2 distinct
    assert distinct_n(["a b a b", "a b"], 2) == 0.5
    assert distinct_n(["a b c"], 1) == 1.0 and distinct_n(["a"], 2) == 0.0


def test_moving_average_and_noise():
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    # differences 1, -1, 1: population deviation 0.942809, / √2
    assert step_noise([0, 1, 0, 1]) == pytest.approx(math.sqrt(8 / 9) / math.sqrt(2))


def test_parting_step_finds_the_gold_peak_when_the_proxy_goes_on_rising():
    proxy = [0.1 * i for i in range(20)]
    gold = [min(i, 19 - i) * 0.1 for i in range(20)]  # rises to step 9, falls after
    # smoothed over 3 steps, gold peaks where the last three are 0.8, 0.9, 0.9 or 0.9, 0.9, 0.8: index 10
    assert parting_step(proxy, gold, window=3) == 10
    assert parting_step(proxy, proxy, window=3) is None  # the gold rises with the proxy
    assert parting_step(proxy[:5], gold[:5], window=3) is None  # too short to tell


def test_parting_step_stays_quiet_when_the_fall_is_within_the_noise():
    proxy = [0.1 * i for i in range(20)]
    noisy_flat = [0.5 + (0.3 if i % 2 else -0.3) for i in range(20)]
    assert parting_step(proxy, noisy_flat, window=4) is None
    falling_gold_flat_proxy = [1.0 - 0.05 * i for i in range(20)]
    assert parting_step([0.5] * 20, falling_gold_flat_proxy, window=4) is None  # the proxy did not rise


def test_the_parting_margin_is_bonferroni_over_peaks_and_looks():
    # 20 steps: z at 0.05 / 20² = 1.25e-4 one-sided is 3.6623; times √2/√3 for 3-step means
    assert parting_margin(20, 3) == pytest.approx(3.66226 * math.sqrt(2) / math.sqrt(3), rel=1e-5)
    assert parting_margin(100, 5) > parting_margin(20, 5) > parting_margin(20, 10)


def test_parting_step_at_the_margin():
    # gold: noise 0.1 from alternating ±0.05 around a level that drops by `fall` after step 9
    def gold(fall):
        return [(0.05 if i % 2 else -0.05) - (fall if i > 9 else 0.0) for i in range(20)]

    proxy = [0.1 * i for i in range(20)]
    noise = step_noise(gold(0.0))
    # 4-step means: the fall of the level shows in full once a window lies wholly after it
    needed = parting_margin(20, 4) * noise
    assert parting_step(proxy, gold(needed * 1.3), window=4) is not None
    assert parting_step(proxy, gold(needed * 0.7), window=4) is None


def test_a_proxy_at_its_ceiling_still_counts_but_a_falling_one_does_not():
    gold = [0.5] * 6 + [0.0] * 14
    saturated = [0.1 * i for i in range(6)] + [0.6] * 14  # rose, then held at its ceiling
    assert parting_step(saturated, gold, window=3) is not None
    collapsing = [0.1 * i for i in range(6)] + [0.6 - 0.04 * i for i in range(14)]  # falls with the gold
    assert parting_step(collapsing, gold, window=3) is None


def test_the_watch_seldom_warns_when_the_gold_is_only_noise():
    rng, runs, fired = random.Random(0), 100, 0
    for _ in range(runs):
        gold = [rng.gauss(0, 1) for _ in range(100)]
        proxy = [0.05 * i + rng.gauss(0, 1) for i in range(100)]
        fired += any(parting_step(proxy[:k], gold[:k], 5) is not None for k in range(10, 101))
    assert fired / runs <= 0.05  # what FALSE_ALARM_RATE promises over the whole run (1/100 measured)


def test_best_of_n_by_hand():
    """Three samples of one prompt, proxy 0.1, 0.3, 0.2 and gold 1, 0, 2. Ranked by proxy: (0.1, 1),
    (0.2, 2), (0.3, 0). Best of 2 of 3: rank i wins C(i−1, 1)/C(3, 2) = 0, 1/3, 2/3 of the subsets:
    gold 2/3 and proxy 0.2/3 + 0.6/3; best of 1 is the mean; best of 3 the top sample."""
    proxy, gold = torch.tensor([[0.1, 0.3, 0.2]]), torch.tensor([[1.0, 0.0, 2.0]])
    one, two, three = best_of_n_curve(proxy, gold, [1, 2, 3])
    assert one["gold"] == pytest.approx(1.0) and one["kl"] == 0.0
    assert two["gold"] == pytest.approx(2 / 3) and two["proxy"] == pytest.approx(0.8 / 3)
    assert three["gold"] == pytest.approx(0.0) and three["proxy"] == pytest.approx(0.3)
    assert two["kl"] == pytest.approx(math.log(2) - 0.5) == best_of_n_kl(2)
    with pytest.raises(ValueError, match="1 <= n <= 3"):
        best_of_n_curve(proxy, gold, [4])


def test_best_of_n_matches_drawing_subsets():
    torch.manual_seed(0)
    proxy, gold = torch.randn(2, 6), torch.randn(2, 6)
    from itertools import combinations

    for n in (2, 4):
        exact = best_of_n_curve(proxy, gold, [n])[0]["gold"]
        by_subsets = torch.stack(
            [
                torch.tensor(
                    [float(gold[p, max(s, key=lambda i: proxy[p, i])]) for s in combinations(range(6), n)]
                ).mean()
                for p in range(2)
            ]
        ).mean()
        assert exact == pytest.approx(float(by_subsets), rel=1e-6)


def test_the_gold_fall_is_paired_over_prompts():
    # peak (n=2) per prompt 1 and 2, last (n=4) 0 and 0: fall 1.5, sample deviation √0.5, standard error √0.5/√2
    curve = [
        {"n": 1, "gold": 0.5, "gold_per_prompt": [0.5, 0.5]},
        {"n": 2, "gold": 1.5, "gold_per_prompt": [1.0, 2.0]},
        {"n": 4, "gold": 0.0, "gold_per_prompt": [0.0, 0.0]},
    ]
    assert gold_fall(curve) == pytest.approx({"peak_n": 2, "fall": 1.5, "fall_se": 0.5})


def test_best_of_n_kl_and_the_gold_standard_error_by_hand():
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75) and best_of_n_kl(1) == 0.0
    # two prompts whose best-of-1 gold means are 1 and 3: mean 2, sample deviation √2, standard error √2/√2 = 1
    proxy, gold = torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 4.0]])
    (one,) = best_of_n_curve(proxy, gold, [1])
    assert one["gold"] == 2.0 and one["gold_se"] == pytest.approx(1.0) and one["gold_per_prompt"] == [1.0, 3.0]
    # two prompts, proxies averaged: best of 2 picks proxy 1 and 5
    (two,) = best_of_n_curve(torch.tensor([[0.0, 1.0], [5.0, 2.0]]), gold, [2])
    assert two["proxy"] == 3.0


def test_parting_step_needs_the_fall_beyond_its_noise_and_a_full_window_after_the_peak():
    proxy = [0.1 * i for i in range(16)]
    # the gold rises to step 7 then falls by 0.05 a step: over 4 steps that is 0.2; a noise of ±0.5 hides it
    trend = [0.1 * i if i <= 7 else 0.7 - 0.05 * (i - 7) for i in range(16)]
    assert parting_step(proxy, trend, window=4) is not None
    noisy = [t + (0.5 if i % 2 else -0.5) for i, t in enumerate(trend)]
    assert parting_step(proxy, noisy, window=4) is None
    # a fall that started less than a window ago is not yet a parting
    late = [0.1 * i if i <= 13 else 1.3 - 0.3 * (i - 13) for i in range(16)]
    assert parting_step(proxy, late, window=4) is None
    # the first steps cannot be the peak: their trailing mean is over fewer than a window
    early = [5.0, 0.0, 0.0, 0.0] + [0.1 * i for i in range(12)]
    assert parting_step(proxy, early, window=4) is None


def test_the_watch_names_the_peak_step_counting_from_one_and_its_verdict_resumes():
    from types import SimpleNamespace

    from rlxf.recipes.online_watch import OveroptimizationWatch
    from rlxf.rewards.base import single_source

    class Run:
        def __init__(self, resumed=None):
            self.resumed_files, self.saved = resumed or {}, {}

        def save_with_checkpoint(self, name, tensors):
            self.saved[name] = tensors

    golds = iter([0.1 * i if i <= 5 else 0.5 - 0.2 * (i - 5) for i in range(14)])
    gold = SimpleNamespace(score=lambda prompts, texts, **kw: single_source("g", [next(golds)]))
    run, rows = Run(), []
    watch = OveroptimizationWatch(3, gold, run)
    rollout = SimpleNamespace(prompt_index=[0], texts=["x"], completion_ids=[[1]])
    prompt = SimpleNamespace(messages=[], context={}, conversational=False)
    for step in range(14):
        metrics = {"reward": 0.1 * step}
        watch.observe([prompt], rollout, metrics)
        rows.append(metrics)
    parted = next(i for i, r in enumerate(rows) if r["overoptimization"])
    # the smoothed gold peaks at index 5 or 6 (means of 0.3, 0.4, 0.5 and 0.4, 0.5, 0.3): index 5 is 0.4; 6 is 0.4
    assert rows[-1]["gold_peak_step"] == watch.parted_at + 1 and watch.parted_at in (5, 6)
    assert all("gold_peak_step" not in r for r in rows[:parted])
    resumed = OveroptimizationWatch(3, gold, Run(run.saved))
    assert resumed.parted_at == watch.parted_at and resumed.gold == watch.gold

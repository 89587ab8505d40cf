"""The demo's wiring: one seed for every stage, and the online stage's outcome said in words."""

import rlxf.demo as demo
from rlxf.demo import DemoConfig, online_verdict, run_demo


def test_the_demo_seed_reaches_every_stage_and_the_split_keeps_its_own(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(demo, "train_reward_model", lambda c: seen.setdefault("rm", c))
    monkeypatch.setattr(demo, "train_dpo", lambda c: seen.setdefault("dpo", c))
    monkeypatch.setattr(demo, "evaluate", lambda c: seen.setdefault("eval", c))
    monkeypatch.setattr(demo, "train_online", lambda c: seen.setdefault("online", c))
    monkeypatch.setattr(demo, "write_report", lambda root, timings, config: root / "report.md")
    run_demo(DemoConfig(output_dir=str(tmp_path), seed=7, split_seed=3))
    assert [seen[s].train.seed for s in ("rm", "dpo", "online")] == [7, 7, 7]
    assert seen["eval"].generation.seed == 7
    assert {seen[s].data.split_seed for s in ("rm", "dpo", "eval")} == {3}


def test_the_online_verdict_says_whether_the_stage_learned():
    # 15 right and 3 wrong of 18 changed problems: p = 2 * P(Binomial(18, 1/2) <= 3) = 0.0075
    assert "rose significantly" in online_verdict(15, 3, 0.0075) and "learned" in online_verdict(15, 3, 0.0075)
    assert "fell significantly" in online_verdict(1, 12, 0.003)
    assert "**not** change significantly" in online_verdict(9, 6, 0.61)

"""The over-optimization watch on a tiny model: it fires on a run built to hack its proxy and stays
quiet on one whose gold signal agrees with the proxy."""

import json

import pytest

from tests.integration.test_safety import online

GOLD = """import re


def clean_digits(completions, **kwargs):  # what the proxy stands for: digits, but only 5 to 9
    return [float(bool(re.search(r"[5-9]", c)) and not re.search(r"[0-4]", c)) for c in completions]


def any_digit(completions, **kwargs):  # the proxy's own aim, scored apart
    return [float(bool(re.search(r"[0-9]", c))) for c in completions]
"""


@pytest.mark.parametrize("gold, fires", [("clean_digits", True), ("any_digit", False)])
def test_the_watch_fires_when_the_proxy_is_hacked_and_only_then(tmp_path, prompt_file, gold, fires, capsys):
    # the proxy (a digit anywhere) rises to 1 within a dozen steps; digits 0-4 come with it, so the
    # gold that wants only 5-9 falls (to 0 by step 14), while a gold that wants any digit rises with
    # the proxy; the watch, guarding against false alarms over the whole run, is sure by step 20
    (tmp_path / "golds.py").write_text(GOLD)
    watch = f"watch.gold=[{{kind: python, function: '{tmp_path / 'golds.py'}:{gold}'}}]"
    results, rows = online(tmp_path / "run", prompt_file, "train.max_steps=20", "watch.window=3", watch)
    assert rows[-1]["reward"] > 0.9 and "distinct_2" in rows[-1] and f"gold/{gold}" in rows[-1]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "report/gold.png" in report and "greedy_gold" in results["after"]
    if fires:
        assert rows[-1]["overoptimization"] == 1 and 1 <= rows[-1]["gold_peak_step"] < rows[-1]["step"]
        assert "warning: over-optimization" in capsys.readouterr().err and "**Over-optimization**" in report
    else:
        assert all(r["overoptimization"] == 0 for r in rows) and "gold_peak_step" not in rows[-1]
        assert "The gold signal did not fall" in report


def test_the_best_of_n_curve_runs_from_the_command_line_and_reuses_its_samples(tmp_path, small_hh):
    from rlxf.cli import main

    for seed in (1, 2):  # two tiny reward models: a proxy and a "gold"
        rm = ["model.name=tiny-llama", f"data.path={small_hh}", "train.max_steps=2", "train.batch_size=4"]
        assert main(["rm", f"output_dir={tmp_path / f'rm{seed}'}", f"train.seed={seed}", *rm]) == 0
    args = [
        "overoptimization",
        f"output_dir={tmp_path / 'curve'}",
        "policy.name=tiny-llama",
        f"data.path={small_hh}",
        f"proxy={tmp_path / 'rm1' / 'model'}",
        f"gold={tmp_path / 'rm2' / 'model'}",
        "prompts=4",
        "samples=6",
        "max_new_tokens=8",
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [p["n"] for p in results["curve"]] == [1, 2, 4, 6] and results["prompts"] == 4
    assert all(p["proxy"] <= q["proxy"] + 1e-9 for p, q in zip(results["curve"], results["curve"][1:]))
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0 and "| n | KL |" in (
        tmp_path / "curve" / "report.md"
    ).read_text()
    samples = (tmp_path / "curve" / "samples.jsonl").read_text()
    assert main(args) == 0 and (tmp_path / "curve" / "samples.jsonl").read_text() == samples  # read back, not drawn
    assert main([*args[:-1], "max_new_tokens=9"]) == 2  # one line: the samples were drawn otherwise

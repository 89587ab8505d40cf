"""Every run writes a report a person can read, and says in words when it did not learn."""

import json

from rlxf.cli import main
from rlxf.eval.run_report import write_run_report


def test_a_dpo_run_ends_with_a_report_and_rlxf_report_rewrites_it(tmp_path, small_hh, capsys):
    folder = tmp_path / "dpo"
    main(["dpo", f"output_dir={folder}", "policy.name=tiny-llama", f"data.path={small_hh}", "data.max_length=128",
          "train.max_steps=4", "train.batch_size=2", "train.lr=1e-3"])  # fmt: skip
    text = (folder / "report.md").read_text()
    assert "## loss" in text and "## preference" in text and "rewards/accuracy" in text
    assert (folder / "report" / "loss.png").stat().st_size > 1000
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0 and (folder / "report.md").is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_a_flat_online_run_says_why_in_words(tmp_path):
    rows = [{"step": s, "split": "train", "loss": 0.0, "reward": 0.05, "zero_variance_groups": 0.92, "grad_norm": 0.0,
             "reward/math": 0.05, "reward/sandbox/unisolated": 1.0, "kl": 0.0} for s in range(1, 13)]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"before": {"greedy_reward": 0.05}, "after": {"greedy_reward": 0.05, "greedy_interval": [0.01, 0.2]}}
    (tmp_path / "eval.json").write_text(json.dumps(results))
    text = write_run_report(tmp_path).read_text()
    assert (
        "**The reward did not rise** beyond its step-to-step noise (0.05 in the first steps, 0.05 in the last)" in text
    )
    assert "92% of the groups had every sample rewarded alike" in text and "Every gradient was zero" in text
    assert "Held-out greedy reward 0.050 → 0.050 (95% interval after: 0.010 to 0.200)" in text
    assert "reward/math" in text and "reward/sandbox/unisolated" not in text


def test_a_rise_within_the_noise_is_not_called_a_rise():
    from rlxf.eval.run_report import verdicts

    def run(rewards):
        return [{"step": s, "reward": r} for s, r in enumerate(rewards, 1)]

    noisy = [0.2, 0.4, 0.1, 0.5, 0.3, 0.2, 0.45, 0.25]  # quarters (0.2, 0.4) and (0.45, 0.25): +0.05 in noise
    assert "did not rise** beyond its step-to-step noise" in verdicts(run(noisy), [], {})[0]
    rising = [0.1, 0.12, 0.3, 0.4, 0.5, 0.6, 0.8, 0.82]  # (0.1, 0.12) -> (0.8, 0.82): far beyond the spread
    assert verdicts(run(rising), [], {})[0] == "The reward rose: 0.11 in the first steps, 0.81 in the last."
    assert "Too few steps" in " ".join(verdicts(run([0.1, 0.2, 0.3]), [], {}))  # quarters of one step

"""A report for any run folder (`rlxf report RUN_DIR`, and at the end of every recipe): report.md
with PNG plots from metrics.jsonl, the held-out results of eval.json with their intervals, and in
words whether the run's main signal moved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import sqrt
from pathlib import Path
from statistics import fmean, variance
from typing import Any

from rlxf.config import Checked
from rlxf.eval.people_gold import people_section, read_people_scores
from rlxf.eval.report import plot_curves

PANELS: dict[str, tuple[str, ...]] = {
    "loss": ("loss",),
    "reward": ("reward",),
    "gold": ("reward", "gold"),
    "diversity": ("distinct_2",),
    "cost": ("cost", "cost_window_mean", "cost_bound"),
    "multiplier": ("multiplier",),
    "kl": ("kl", "kl_coef"),
    "entropy": ("entropy",),
    "length": ("response_length", "greedy_length"),
    "zero_variance_groups": ("zero_variance_groups",),
    "preference": ("rewards/accuracy", "rewards/margin", "accuracy", "margin"),
}
"""Plot name -> the metrics it draws (those a run logged); per-source rewards join the reward plot."""


@dataclass
class ReportConfig(Checked):
    run_dir: str = ""
    """A run folder (output_dir of any recipe): its metrics.jsonl and eval.json become report.md with plots."""
    labels: str = ""
    """People as gold: a feedback-app export (a snapshot folder, or its labeled.jsonl or ratings.jsonl)
    with answers about the samples the run wrote for labelers (watch.for_labelers_every); the report
    puts them beside the reward, step by step, and says where they parted."""
    aspect: str = ""
    """labels from a rating project: the aspect to read (default: the mean of the aspects)."""
    labels_window: int = 3
    """Labeled steps the people's and the reward's trends are smoothed over."""

    def check(self):
        if not self.run_dir:
            raise ValueError("give the run folder: rlxf report RUN_DIR")
        if self.labels_window < 2:
            raise ValueError(f"labels_window must be >= 2, got {self.labels_window}")


def report(config: ReportConfig) -> Path:
    people = (config.labels, config.aspect, config.labels_window) if config.labels else None
    path = write_run_report(config.run_dir, people)
    print(f"wrote {path}")
    return path


def read_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """Training and held-out rows of a metrics.jsonl."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("split", "train") == "train"], [r for r in rows if r.get("split") == "eval"]


def panel_keys(name: str, rows: list[dict]) -> list[str]:
    logged = {key for row in rows for key, value in row.items() if isinstance(value, (int, float))}
    keys = [key for key in PANELS[name] if key in logged]
    if name in ("reward", "gold", "cost"):  # each source's own score, not the flags logged beside them
        keys += sorted(k for k in logged if k.startswith(f"{name}/") and k.count("/") == 1)
    if name == "gold" and "gold" not in keys:
        return []
    return keys


def write_run_report(run_dir: str | Path, people: tuple[str, str, int] | None = None) -> Path:
    """report.md and report/*.png in ``run_dir``; returns the markdown's path. ``people`` (labels,
    aspect, window) adds people's answers as gold, also kept in watch/people.json."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a run folder")
    train, held = read_rows(metrics)
    figures = run_dir / "report"
    figures.mkdir(exist_ok=True)
    sections = [f"# Run report: {run_dir.name}", "", *verdicts(train, held, _results(run_dir)), ""]
    for name in PANELS:
        keys = panel_keys(name, train) or panel_keys(name, held)
        if not keys:
            continue
        eval_key = next((k for k in keys if any(k in r for r in held)), None)
        plot_curves(figures / f"{name}.png", train, keys, title=name, ylabel=name, eval_rows=held, eval_key=eval_key)
        sections += [f"## {name}", "", summary_table(train, keys), "", f"![{name}](report/{name}.png)", ""]
    if people is not None:
        labels, aspect, window = people
        section, summary = people_section(read_people_scores(labels, run_dir, aspect), train, figures, window)
        sections += section
        (run_dir / "watch").mkdir(exist_ok=True)
        (run_dir / "watch" / "people.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sections += held_out_section(_results(run_dir))
    path = run_dir / "report.md"
    path.write_text("\n".join(sections) + "\n", encoding="utf-8")
    return path


def _results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "eval.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def summary_table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| metric | first steps | last steps |", "|---|---:|---:|"]
    for key in keys:
        first, last = _ends(rows, key)
        if first is not None:
            lines.append(f"| {key} | {first:.4g} | {last:.4g} |")
    return "\n".join(lines)


def _ends(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """Means of the first and last quarter (at least one step each) of a metric's values."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if not values:
        return None, None
    quarter = max(1, len(values) // 4)
    return fmean(values[:quarter]), fmean(values[-quarter:])


def _change(rows: list[dict], key: str) -> tuple[float, float, str]:
    """The first and last quarter's means of a metric, and whether it went "up", "down" or
    "flat" (within two standard errors of the difference, the step-to-step noise), or "unclear"
    (a quarter of one step has no spread to judge by)."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    quarter = max(1, len(values) // 4)
    first, last = values[:quarter], values[-quarter:]
    difference = fmean(last) - fmean(first)
    if quarter < 2:
        return fmean(first), fmean(last), "unclear"
    noise = 2 * sqrt(variance(first) / quarter + variance(last) / quarter)
    return fmean(first), fmean(last), "up" if difference > noise else "down" if difference < -noise else "flat"


def verdicts(train: list[dict], held: list[dict], results: dict) -> list[str]:
    """Whether the run's main signal moved beyond its noise, in words: reward for online runs,
    else the loss."""
    if not train:
        return ["No training step was logged."]
    said = []
    if any("reward" in r for r in train):
        first, last, way = _change(train, "reward")
        numbers = f"{first:.3g} in the first steps, {last:.3g} in the last"
        if way == "up":
            said.append(f"The reward rose: {numbers}.")
        else:
            said.append(f"**The reward did not rise** beyond its step-to-step noise ({numbers}).")
            said += [] if way != "unclear" else ["Too few steps were logged to tell a change from noise."]
            said += _why_flat(train)
    else:
        first, last, way = _change(train, "loss")
        moved = "fell" if way == "down" else "**did not fall** beyond its step-to-step noise"
        said.append(f"The loss {moved}: {first:.4g} in the first steps, {last:.4g} in the last.")
        said += [] if way != "unclear" else ["Too few steps were logged to tell a change from noise."]
    said += _constraint(train) + _safety_test(results) + _overoptimization(train)
    before, after = results.get("before", {}), results.get("after", {})
    if "greedy_reward" in before and "greedy_reward" in after:
        said.append(
            f"Held-out greedy reward {before['greedy_reward']:.3f} → {after['greedy_reward']:.3f}"
            + (f" (95% interval after: {_interval(after['greedy_interval'])})." if "greedy_interval" in after else ".")
        )
    return said


def _constraint(train: list[dict]) -> list[str]:
    """Safe RLHF's constraint at the end of the run: the last window's mean cost against the limit."""
    last = next((r for r in reversed(train) if "cost_window_mean" in r), None)
    if last is None:
        return []
    bound = "cost_bound" in last  # HC-RLHF constrains a pessimistic bound on the mean
    constrained = last["cost_bound"] if bound else last["cost_window_mean"]
    limit = constrained - last["cost_violation"]
    held = "held" if constrained <= limit else "**was not met**"
    what = "the pessimistic bound on the mean cost" if bound else "mean cost"
    said = [
        f"The cost constraint {held} at the end: {what} {constrained:.3g} over the last window against the limit "
        f"{limit:.3g}, with λ = {last['multiplier']:.3g}."
    ]
    return said


def _overoptimization(train: list[dict]) -> list[str]:
    """The watch's verdict: whether the reward rose while the gold signal fell, and from which step."""
    gold = [r for r in train if "gold" in r]
    if not gold:
        return []
    parted = next((r for r in gold if r.get("overoptimization")), None)
    if parted is None:
        ends = f"{gold[0]['gold']:.3g} at the first step, {gold[-1]['gold']:.3g} at the last"
        if _change(train, "reward")[2] != "up":
            return [f"The watch saw no over-optimization: the reward did not rise (the gold signal: {ends})."]
        return [f"The gold signal did not fall while the reward rose ({ends})."]
    peak = int(parted["gold_peak_step"])
    at_peak = next((r["gold"] for r in gold if r["step"] == peak), float("nan"))
    return [
        f"**Over-optimization**: the reward rose while the gold signal fell from step {peak} on (gold {at_peak:.3g} "
        f"there, {gold[-1]['gold']:.3g} at the end; seen at step {parted['step']}). The policy is exploiting its reward."
    ]


def _safety_test(results: dict) -> list[str]:
    """HC-RLHF's safety test, as eval.json records it."""
    test = results.get("safety_test")
    if not test:
        return []
    numbers = (
        f"the {1 - test['delta']:.0%} upper bound on the mean cost of {test['n']} test responses is "
        f"{test['ucb']:.4g} (mean {test['mean']:.4g}) against the limit {test['cost_limit']:.4g}"
    )
    if test["passed"]:
        return [f"The safety test passed: {numbers}."]
    return [f"**No safe solution found**: {numbers}. The model was saved as unsafe_candidate/, not model/."]


def _why_flat(train: list[dict]) -> list[str]:
    reasons = []
    zero = [r["zero_variance_groups"] for r in train if "zero_variance_groups" in r]
    if zero and fmean(zero) > 0.5:
        reasons.append(
            f"On average {fmean(zero):.0%} of the groups had every sample rewarded alike, so their group-relative "
            "advantage was zero and they taught nothing: make the task easier (or harder), sample more, or change the prompt."
        )
    norms = [r["grad_norm"] for r in train if "grad_norm" in r]
    if norms and max(norms) == 0:
        reasons.append("Every gradient was zero: no step changed the policy.")
    return reasons


def _interval(bounds) -> str:
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}"


def held_out_section(results: dict) -> list[str]:
    """eval.json's held-out numbers, with their intervals where the recipe gave them."""
    held = results.get("held_out") or results.get("after") or {}
    rows = [(k, v) for k, v in held.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return []
    intervals = {k.removesuffix("_interval"): v for k, v in held.items() if k.endswith("_interval")}
    lines = ["## Held-out results", "", "| metric | value | 95% interval |", "|---|---:|---|"]
    for key, value in rows:
        bounds = intervals.get(key) or intervals.get(key.removesuffix("_reward"))
        lines.append(f"| {key} | {value:.4g} | {_interval(bounds) if bounds else ''} |")
    return [*lines, ""]

"""People as the over-optimization watch's gold signal (Gao et al., "Scaling Laws for Reward Model
Overoptimization", ICML 2023, use a gold reward model as a stand-in for them).

A run with ``watch.for_labelers_every`` writes some of its samples to watch/for_labelers.jsonl, each
tagged with its step; people answer them in a reaction or rating project of the feedback app; its
export names the tag beside each answer. Here the answers go back onto the steps: the mean human score
of each labeled step beside the reward the run optimized at that step, and the step where they parted
(:func:`rlxf.eval.overoptimization.parting_step` over the labeled steps).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev

from rlxf.eval.overoptimization import parting_step
from rlxf.eval.report import plot_curves

LABEL_FILES = ("labeled.jsonl", "ratings.jsonl")
"""A snapshot's files with one score per response: reactions (love/like 1, dislike 0) and ratings."""


@dataclass
class PeopleScores:
    """The human scores of one run's samples, by the step that wrote them."""

    by_step: dict[int, list[float]] = field(default_factory=dict)
    other_runs: int = 0  # answers about samples of other runs or models
    untagged: int = 0  # answers about responses imported without a model


def read_people_scores(labels: str | Path, run_dir: str | Path, aspect: str = "") -> PeopleScores:
    """The scores in ``labels`` (an exported snapshot folder, or its labeled.jsonl or ratings.jsonl)
    about samples that ``run_dir`` wrote. A rating's score is its ``aspect``, or the mean of its
    aspects when none is named. A row that cannot be read stops with its file, line and field."""
    run_dir = Path(run_dir).resolve()
    path = _label_file(Path(labels), run_dir)
    scores = PeopleScores()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        step = _step_of(row, run_dir, where)
        if step is None:
            scores.untagged += not row.get("model")
            scores.other_runs += bool(row.get("model"))
            continue
        scores.by_step.setdefault(step, []).append(_score_of(row, aspect, where))
    return scores


def _label_file(labels: Path, run_dir: Path) -> Path:
    if labels.is_file():
        return labels
    if not labels.is_dir():
        raise FileNotFoundError(f"labels={labels}: no such file or snapshot folder")
    present = [labels / name for name in LABEL_FILES if (labels / name).is_file()]
    tagged = [p for p in present if json.dumps(f"{run_dir}/step-")[:-1] in p.read_text(encoding="utf-8")]
    if len(tagged) != 1:
        found = ", ".join(p.name for p in present) or "neither"
        raise ValueError(
            f"labels={labels}: expected one of {' or '.join(LABEL_FILES)} with answers about {run_dir}'s samples "
            f"(found {found}); name the file"
        )
    return tagged[0]


def _step_of(row: dict, run_dir: Path, where: str) -> int | None:
    """The step in a ``"model": "<run folder>/step-N"`` tag of this run (the folder as the run wrote
    it, an absolute path); None for any other model."""
    model = row.get("model", "")
    if not isinstance(model, str):
        raise ValueError(f"{where}, field model: expected a string, got {type(model).__name__}")
    tag = re.fullmatch(r"(.*)/step-(\d+)", model)
    return int(tag.group(2)) if tag and Path(tag.group(1)).resolve() == run_dir else None


def _score_of(row: dict, aspect: str, where: str) -> float:
    if "label" in row:
        value, name = row["label"], "label"
    elif isinstance(row.get("scores"), dict) and row["scores"]:
        scores = row["scores"]
        if aspect and aspect not in scores:
            raise ValueError(f"{where}, field scores: no aspect {aspect!r} (it has {', '.join(scores)})")
        value, name = (scores[aspect], f"scores.{aspect}") if aspect else (_mean_of(scores.values(), where), "scores")
    else:
        raise ValueError(f"{where}: expected a label (a reaction) or scores (a rating)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}, field {name}: expected a number, got {value!r}")
    return float(value)


def _mean_of(values, where: str) -> float:
    values = list(values)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}, field scores: expected numbers, got {values!r}")
    return fmean(values)


def people_series(scores: PeopleScores, train_rows: list[dict]) -> list[dict]:
    """One point per labeled step: the people's mean score with its standard error and count, and
    the reward the run optimized at that step (from metrics.jsonl)."""
    reward = {row["step"]: row["reward"] for row in train_rows if "reward" in row}
    series = []
    for step in sorted(scores.by_step):
        values = scores.by_step[step]
        se = stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        series.append(
            {"step": step, "people": fmean(values), "people_se": se, "n": len(values), "reward": reward.get(step)}
        )
    return series


def people_section(scores: PeopleScores, train_rows: list[dict], figures: Path, window: int) -> tuple[list[str], dict]:
    """The report's section on people as gold, and the same numbers for watch/people.json."""
    series = people_series(scores, train_rows)
    paired = [point for point in series if point["reward"] is not None]
    peak = parting_step([p["reward"] for p in paired], [p["people"] for p in paired], window) if paired else None
    summary = {
        "series": series,
        "window": window,
        "parted_at_step": paired[peak]["step"] if peak is not None else None,
        "answers": sum(p["n"] for p in series),
        "answers_about_other_runs": scores.other_runs,
        "answers_without_a_model": scores.untagged,
    }
    if not series:
        return ["## people", "", "No answer in the labels is about this run's samples.", ""], summary
    plot_curves(figures / "people.png", paired, ["reward", "people"], title="people as gold", ylabel="score")
    lines = ["## people", "", _people_verdict(series, paired, peak, window), ""]
    lines += ["| step | reward (optimized) | people's mean | standard error | answers |", "|---:|---:|---:|---:|---:|"]
    skipped = [
        f"{n} {what}"
        for n, what in (
            (scores.other_runs, "about other runs' or models' samples"),
            (scores.untagged, "about responses imported without a model"),
        )
        if n
    ]
    lines += [f"Not counted: {', '.join(skipped)}.", ""] if skipped else []
    lines += [
        f"| {p['step']} | {_number(p['reward'])} | {p['people']:.4g} | {p['people_se']:.3g} | {p['n']} |"
        for p in series
    ]
    return [*lines, "", "![people](report/people.png)", ""], summary


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _people_verdict(series: list[dict], paired: list[dict], peak: int | None, window: int) -> str:
    counted = f"{sum(p['n'] for p in series)} answers on {len(series)} steps"
    if peak is None:
        if len(paired) < 2 * window:
            return f"People answered {counted}: too few labeled steps for a trend over windows of {window}."
        return f"People's verdict did not fall while the reward rose ({counted})."
    step = paired[peak]["step"]
    return (
        f"**Over-optimization, by people's verdict**: the reward rose while their mean score fell from step {step} on "
        f"({paired[peak]['people']:.3g} there, {paired[-1]['people']:.3g} at step {paired[-1]['step']}; {counted})."
    )

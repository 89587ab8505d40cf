"""A report folder a person can read: markdown with PNG plots and honest intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlxf.eval.stats import Estimate


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(
    path: Path,
    rows: list[dict],
    keys: list[str],
    *,
    title: str,
    ylabel: str,
    eval_rows: list[dict] = (),
    eval_key: str | None = None,
    hline: float | None = None,
) -> Path:
    """Per-step values (faint) with a moving average, plus held-out points if given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    window = max(1, len(rows) // 15)
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if not points:
            continue
        steps, values = zip(*points)
        (line,) = ax.plot(steps, values, alpha=0.25, linewidth=1)
        ax.plot(steps, moving_average(list(values), window), color=line.get_color(), label=f"{key} (train)")
    if eval_key:
        points = [(r["step"], r[eval_key]) for r in eval_rows if eval_key in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, "o-", color="black", label=f"{eval_key} (held out)")
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle=":", linewidth=1)
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_estimates(path: Path, estimates: dict[str, Estimate], *, title: str) -> Path:
    """Bars with 95% intervals against the 0.5 chance line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    names = list(estimates)
    values = [estimates[n].value for n in names]
    errors = [
        [estimates[n].value - estimates[n].low for n in names],
        [estimates[n].high - estimates[n].value for n in names],
    ]
    ax.bar(names, values, yerr=errors, capsize=6, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][: len(names)])
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    for i, name in enumerate(names):
        ax.text(i, 0.02, f"{values[i]:.3f}\nn={estimates[name].n}", ha="center", color="white", fontsize=9)
    ax.set(title=title, ylim=(0, 1), ylabel="rate (95% interval)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def estimate_from(payload: dict[str, Any], value: str, interval: str, n: str = "pairs") -> Estimate:
    low, high = payload[interval]
    return Estimate(payload[value], low, high, payload[n], payload.get("p_value_vs_chance"))


def verdict(name: str, estimate: Estimate) -> str:
    if estimate.significant_vs_half:
        direction = "above" if estimate.value > 0.5 else "below"
        return f"{name} is significantly {direction} 0.5 (p = {estimate.p_value_vs_half:.2g})."
    p = estimate.p_value_vs_half
    return f"{name} is **not** significantly different from 0.5 (p = {p:.2g})." if p is not None else ""


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}

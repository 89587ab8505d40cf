"""The Pareto front of policies trained with different weightings of several rewards."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlxf.eval.report import pyplot


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one (all maximized)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in the order given."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def plot_front(path: Path, points: Sequence[Sequence[float]], labels: Sequence[str], axes: Sequence[str]) -> None:
    """The first two objectives: every policy, its label, and the front joined in order of the first."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=110)
    front = set(pareto_front(points))
    for i, (point, label) in enumerate(zip(points, labels)):
        ax.scatter(point[0], point[1], color="C0" if i in front else "0.6", zorder=3)
        ax.annotate(label, (point[0], point[1]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ordered = sorted((points[i] for i in front), key=lambda p: p[0])
    ax.plot([p[0] for p in ordered], [p[1] for p in ordered], color="C0", label="Pareto front")
    ax.set(xlabel=axes[0], ylabel=axes[1], title="held-out reward per weighting")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

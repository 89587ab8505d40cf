"""How well a preference model's probabilities match how often it is right.

Expected calibration error (Naeini et al., "Obtaining Well Calibrated Probabilities Using Bayesian
Binning", AAAI 2015; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): the
predictions are binned by confidence, and ECE = Σ_b (n_b / n) |accuracy_b - confidence_b|. For a
pair the confidence is max(p, 1 - p) with p = P(chosen ≻ rejected), and the prediction is right
when p > ½ (half right at exactly ½): judged this way, the order in which a pair is shown does not
matter (P(chosen ≻ rejected) alone would have every label 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlxf.eval.report import pyplot


def calibration(probabilities: Sequence[float], bins: int = 10) -> dict:
    """ECE and the reliability bins (equal width on [½, 1]) of P(chosen ≻ rejected) values."""
    table = [{"confidence": 0.0, "accuracy": 0.0, "count": 0} for _ in range(bins)]
    for p in probabilities:
        confidence = max(p, 1 - p)
        right = 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0
        cell = table[min(bins - 1, int((confidence - 0.5) * 2 * bins + 1e-9))]  # 0.6 lands in its bin, not below
        cell["confidence"] += confidence
        cell["accuracy"] += right
        cell["count"] += 1
    for cell in table:
        if cell["count"]:
            cell["confidence"] /= cell["count"]
            cell["accuracy"] /= cell["count"]
    total = max(1, sum(cell["count"] for cell in table))
    ece = sum(cell["count"] / total * abs(cell["accuracy"] - cell["confidence"]) for cell in table)
    return {"ece": ece, "bins": table, "pairs": sum(cell["count"] for cell in table)}


def accuracy_and_calibration(probabilities: Sequence[float], bins: int = 10) -> dict:
    """From P(the observed outcome) of each prediction: accuracy (right when > ½, half at ½; Wilson
    interval, sign test against ½), the expected calibration error and the reliability bins."""
    from rlxf.eval.stats import proportion

    estimate = proportion([1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in probabilities])
    calibrated = calibration(probabilities, bins)
    return {
        "accuracy": estimate.value,
        "accuracy_interval": [estimate.low, estimate.high],
        "n": estimate.n,
        "p_value_vs_chance": estimate.p_value_vs_half,
        "ece": calibrated["ece"],
        "calibration_bins": calibrated["bins"],
    }


def plot_reliability(path: Path, result: dict, *, title: str) -> Path:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), bar width ∝ count."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 4.5))
    shown = [cell for cell in result["bins"] if cell["count"]]
    axis.plot([0.5, 1], [0.5, 1], ":", color="gray", label="perfectly calibrated")
    axis.plot([c["confidence"] for c in shown], [c["accuracy"] for c in shown], "o-", label="model")
    for cell in shown:
        axis.annotate(str(cell["count"]), (cell["confidence"], cell["accuracy"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")  # fmt: skip
    axis.set(xlabel="confidence max(p, 1 - p)", ylabel="accuracy", xlim=(0.5, 1), ylim=(0, 1))
    axis.set_title(f"{title}\nECE {result['ece']:.3f} on {result['pairs']} pairs", fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

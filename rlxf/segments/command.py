"""`rlxf segments`: the partial-return, regret and CPL preference models on human segment labels.

For each condition of the delivery data (Hatgis-Kessell et al., "Influencing Humans to Conform to
Preference Models for RLHF", 2025, arXiv 2501.06416), fit the two one-parameter models of Knox et
al., "Models of human preference for learning reward functions", 2022 (TMLR 2024, arXiv
2206.02231), and train CPL (Hejna et al., ICLR 2024) on the same segments; report in-sample and
10-fold held-out cross-entropy and held-out accuracy. Writes ``results.json`` and ``report.md`` to
``output_dir`` (docs/games.md, "Trajectory segments").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlxf.config import Checked
from rlxf.segments.cpl import cpl_logits, segment_steps, train_cpl
from rlxf.segments.data import CONDITIONS, SegmentPairs, load_conditions
from rlxf.segments.evaluate import fold_indices, held_out_logits, held_out_results, logistic_results
from rlxf.segments.models import PREFERENCE_MODELS

DEFAULT_DATA_DIR = str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "delivery_human_prefs")
"""../shared/data/delivery_human_prefs next to the repository this package is in."""


@dataclass
class SegmentsConfig(Checked):
    output_dir: str = "runs/segments"
    """Where results.json and report.md go."""
    data_dir: str = DEFAULT_DATA_DIR
    """Folder of <condition>_full_filtered_{X,Y,segment_pairs}.npy (default: ../shared/data/delivery_human_prefs beside the repository)."""
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    """Conditions to evaluate (rlxf.segments.data.CONDITIONS)."""
    folds: int = 10
    """Cross-validation folds (Knox et al. use 10)."""
    seed: int = 0
    """Seed of the fold permutation (numpy default_rng)."""
    cpl_alpha: float = 1.0
    """CPL's temperature α: a segment's score is α Σ_t log π(a_t|s_t)."""
    cpl_bias: float = 1.0
    """CPL's conservative bias λ in (0, 1]; 1 is the plain regret model, the main one reported."""
    cpl_steps: int = 300
    """Full-batch gradient-descent steps of the tabular CPL policy per fold (the only regularizer)."""
    cpl_lr: float = 1.0
    """Learning rate of those steps."""

    def check(self):
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise ValueError(f"conditions must be some of {list(CONDITIONS)}, got {self.conditions}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.cpl_alpha <= 0 or self.cpl_lr <= 0 or self.cpl_steps < 1:
            raise ValueError("cpl_alpha and cpl_lr must be positive and cpl_steps at least 1")
        if not 0 < self.cpl_bias <= 1:
            raise ValueError(f"cpl_bias must be in (0, 1], got {self.cpl_bias}")


def run_segments(config: SegmentsConfig) -> dict:
    """Evaluate every condition, write results.json and report.md, print the report's path."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {"config": {k: v for k, v in vars(config).items() if not k.startswith("_")}, "conditions": {}}
    for pairs in load_conditions(config.data_dir, config.conditions):
        results["conditions"][pairs.condition] = evaluate_condition(pairs, config)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report_text(results, config), encoding="utf-8")
    print(f"report: {out / 'report.md'}")
    return results


def evaluate_condition(pairs: SegmentPairs, config: SegmentsConfig) -> dict:
    """Counts, and each model's cross-entropy (full and held out) and held-out accuracy."""
    folds = fold_indices(len(pairs), config.folds, config.seed)
    row = {"n": len(pairs), "ties": pairs.ties}
    for name, feature in PREFERENCE_MODELS.items():
        row[name] = logistic_results(feature(pairs.features), pairs.labels, folds)
    row["cpl"] = held_out_results(_cpl_held_out_logits(pairs, folds, config), pairs.labels)
    return row


def _cpl_held_out_logits(pairs: SegmentPairs, folds: list[np.ndarray], config: SegmentsConfig) -> np.ndarray:
    cells, actions = segment_steps(pairs.segments)

    def fit_and_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        policy = train_cpl(
            cells[train],
            actions[train],
            pairs.labels[train],
            alpha=config.cpl_alpha,
            bias=config.cpl_bias,
            steps=config.cpl_steps,
            lr=config.cpl_lr,
        )
        return cpl_logits(policy, cells[test], actions[test], alpha=config.cpl_alpha)

    return held_out_logits(pairs.labels, folds, fit_and_predict)


def report_text(results: dict, config: SegmentsConfig) -> str:
    """report.md: the settings, the table (one row per condition) and how often regret wins."""
    rows = [_report_row(name, row) for name, row in results["conditions"].items()]
    regret_wins = [n for n, r in results["conditions"].items() if r["regret"]["ce_cv"] < r["partial_return"]["ce_cv"]]
    return f"""# Preference models over trajectory segments

Human labels of the delivery domain (Hatgis-Kessell et al. 2025, arXiv 2501.06416); models of Knox
et al. 2022 (arXiv 2206.02231) and CPL (Hejna et al. 2024, arXiv 2310.13639). Cross-entropy (CE) is
the mean negative log-likelihood in nats with soft labels (ties ½); "full" fits s on all pairs,
"CV" is {config.folds}-fold held out (folds from default_rng({config.seed})); accuracy is held out,
ties excluded, a zero logit counted ½. CPL: tabular π over 100 cells × 4 moves, α = {config.cpl_alpha},
λ = {config.cpl_bias}, {config.cpl_steps} gradient steps at lr {config.cpl_lr}, P(right ≻ left) = σ(S_r − S_l).
Bold: the lowest held-out CE of the row.

| condition | n | ties | PR CE full / CV / acc | Regret CE full / CV / acc | CPL CE CV / acc |
|---|---:|---:|---|---|---|
{chr(10).join(rows)}

Regret's held-out CE is below partial return's in {len(regret_wins)} of {len(rows)} conditions ({", ".join(regret_wins) or "none"}).
"""


def _report_row(name: str, row: dict) -> str:
    best = min(("partial_return", "regret", "cpl"), key=lambda m: row[m]["ce_cv"])

    def cv(model: str) -> str:
        text = f"{row[model]['ce_cv']:.4f}"
        return f"**{text}**" if model == best else text

    pr, regret, cpl_row = row["partial_return"], row["regret"], row["cpl"]
    return (
        f"| {name} | {row['n']} | {row['ties']} "
        f"| {pr['ce_full']:.4f} / {cv('partial_return')} / {pr['accuracy']:.3f} "
        f"| {regret['ce_full']:.4f} / {cv('regret')} / {regret['accuracy']:.3f} "
        f"| {cv('cpl')} / {cpl_row['accuracy']:.3f} |"
    )

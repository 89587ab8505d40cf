"""`rlxf pareto`: one online run per weighting of the reward sources, each policy scored on the
held-out prompts by every source, and the Pareto front among them.

A weighted sum of rewards (``rewards=[{..., weight}]``, each optionally standardized) is one point
on the trade-off; which point depends on the weights. This sweep trains one policy per weighting
(each in its own folder, so an interrupted sweep resumes run by run) and reports which policies no
other beats on every source (Pareto front; as in Rame et al., "Rewarded soups", NeurIPS 2023, and
multi-objective RLHF generally).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import Checked
from rlxf.eval.pareto import pareto_front, plot_front
from rlxf.recipes.common import say, write_json
from rlxf.recipes.online import OnlineConfig, train_online


@dataclass
class ParetoConfig(Checked):
    output_dir: str = "runs/pareto"
    """One folder per weighting (weights_<w1>_<w2>...), and pareto.json, pareto.png, report.md."""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    """The run every weighting shares; its reward sources are the objectives (their weights are replaced)."""
    weights: list[list[float]] = field(default_factory=list)
    """One weighting per run, one weight per source of online.rewards, e.g. [[1, 0], [0.5, 0.5], [0, 1]]."""

    def check(self):
        sources = len(self.online.rewards)
        if sources < 2:
            raise ValueError("a Pareto front needs at least two reward sources in online.rewards")
        if len(self.weights) < 2 or any(len(w) != sources for w in self.weights):
            raise ValueError(f"give at least two weightings, each with {sources} weights (one per reward source)")
        if any(x < 0 for w in self.weights for x in w) or any(sum(w) == 0 for w in self.weights):
            raise ValueError("weights must be >= 0, and not all 0 in a weighting")


def run_pareto(config: ParetoConfig) -> dict:
    output_dir = Path(config.output_dir)
    runs = []
    for weights in config.weights:
        label = "_".join(f"{w:g}" for w in weights)
        say(f"pareto: weights {weights}")
        results = train_online(weighted(config.online, weights, output_dir / f"weights_{label}"))
        after = results["after"]
        scores = {k.removeprefix("greedy_reward/"): v for k, v in after.items() if k.startswith("greedy_reward/")}
        runs.append({"weights": weights, "folder": f"weights_{label}", "held_out": scores})
    objectives = list(runs[0]["held_out"])
    points = [[run["held_out"][name] for name in objectives] for run in runs]
    front = pareto_front(points)
    for i, run in enumerate(runs):
        run["on_front"] = i in front
    summary = {"objectives": objectives, "runs": runs}
    write_json(output_dir / "pareto.json", summary)
    plot_front(output_dir / "pareto.png", points, [r["folder"].removeprefix("weights_") for r in runs], objectives)
    write_report(output_dir, summary)
    say(f"pareto: {len(front)} of {len(runs)} weightings on the front; report: {output_dir / 'report.md'}")
    return summary


def weighted(online: OnlineConfig, weights: list[float], folder: Path) -> OnlineConfig:
    run = copy.deepcopy(online)
    run.output_dir = str(folder)
    for section, weight in zip(run.rewards, weights):
        section.weight = float(weight)
    return run


def write_report(output_dir: Path, summary: dict) -> None:
    objectives = summary["objectives"]
    lines = [
        "# Pareto front over reward weightings",
        "",
        "Each row is a policy trained on the weighted sum of the sources; the columns are its mean greedy "
        "score on the held-out prompts under each source alone. On the front: no other policy scores at "
        "least as well on every source and better on one.",
        "",
        "| weights | " + " | ".join(objectives) + " | on the front |",
        "|---|" + "---:|" * len(objectives) + "---|",
        *(
            f"| {run['weights']} | "
            + " | ".join(f"{run['held_out'][o]:.4g}" for o in objectives)
            + f" | {'yes' if run['on_front'] else ''} |"
            for run in summary["runs"]
        ),
        "",
        "![front](pareto.png)",
    ]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

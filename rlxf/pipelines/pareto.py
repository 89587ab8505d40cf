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
import math
from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import Checked
from rlxf.eval.pareto import pareto_front, plot_front
from rlxf.recipes.common import say, write_json
from rlxf.recipes.online import OnlineConfig, train_online


@dataclass
class ParetoConfig(Checked):
    output_dir: str = "runs/pareto"
    """One folder per weighting (weighting_1, weighting_2, ... in the order given), and pareto.json,
    pareto.png, report.md."""
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
        if not all(math.isfinite(x) and x >= 0 for w in self.weights for x in w) or any(
            sum(w) == 0 for w in self.weights
        ):
            raise ValueError("weights must be finite numbers >= 0, and not all 0 in a weighting")
        if len({tuple(w) for w in self.weights}) < len(self.weights):
            raise ValueError("a weighting is given twice: each needs a run of its own")
        if relative := [s.kind for s in self.online.rewards if s.kind in ("heron", "win_rate")]:
            raise ValueError(
                f"{relative[0]} scores a sample against its prompt's other samples: one greedy answer per held-out "
                "prompt has none, so its objective would be constant; use sources that score one answer alone"
            )
        if self.online.task.eval_count < 1:
            raise ValueError("the front is drawn from held-out scores: online.task.eval_count must be >= 1")


def run_pareto(config: ParetoConfig) -> dict:
    output_dir = Path(config.output_dir)
    runs = []
    for position, weights in enumerate(config.weights):
        folder = f"weighting_{position + 1}"  # by position: two close weightings never share a folder
        say(f"pareto: {folder}, weights {weights}")
        results = train_online(weighted(config.online, weights, output_dir / folder))
        after = results.get("after")
        if after is None:  # a rank other than the main one evaluates nothing
            continue
        scores = {k.removeprefix("greedy_reward/"): v for k, v in after.items() if k.startswith("greedy_reward/")}
        runs.append({"weights": weights, "folder": folder, "held_out": scores})
    if not runs:
        return {}
    objectives = list(runs[0]["held_out"])
    points = [[run["held_out"][name] for name in objectives] for run in runs]
    front = pareto_front(points)
    for i, run in enumerate(runs):
        run["on_front"] = i in front
    summary = {"objectives": objectives, "runs": runs}
    write_json(output_dir / "pareto.json", summary)
    plot_front(output_dir / "pareto.png", points, [str(r["weights"]) for r in runs], objectives)
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

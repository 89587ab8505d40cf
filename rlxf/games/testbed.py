"""`rlxf games`: every learner on every tabular game, against the exact equilibrium.

Writes ``results.json``, ``report.md`` (the tables of docs/games.md) and plots to ``output_dir``:

1. last-iterate convergence: each learner's exploitability after ``iterations`` steps on each
   game, in the β-regularized game (the equilibrium the Nash learners target);
2. Nash-MP's KL to π* against the (1 + 2β)^(-N/2) its paper proves, N the preference queries;
3. Bradley-Terry's failure: how far a BT reward model is from P, and the unregularized
   exploitability of the KL-regularized RLHF policy against the Nash equilibrium's as β shrinks:
   both go to zero on transitive preferences, only the Nash one on intransitive ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlxf.config import Checked
from rlxf.eval.report import pyplot
from rlxf.games.bradley_terry import bt_fit_error, rlhf_policy
from rlxf.games.equilibrium import exploitability, kl, regularized_equilibrium
from rlxf.games.learners import TABULAR_LEARNERS, Trace, play
from rlxf.games.matrices import GAMES, Game


@dataclass
class GamesConfig(Checked):
    output_dir: str = "runs/games"
    """Where results.json, report.md and the plots go."""
    games: list[str] = field(default_factory=lambda: list(GAMES))
    """Games to play: rock_paper_scissors, random_intransitive, transitive."""
    learners: list[str] = field(default_factory=lambda: list(TABULAR_LEARNERS))
    """Learners to run (rlxf.games.learners.TABULAR_LEARNERS)."""
    responses: int = 5
    """K, the responses of the random games (rock-paper-scissors has 3)."""
    seed: int = 0
    """Seed of the random games and of the reference μ."""
    beta: float = 0.1
    """KL weight of the regularized game."""
    iterations: int = 2000
    """Steps of each learner."""
    sweep: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.1, 0.03, 0.01])
    """β values of the Bradley-Terry comparison (part 3)."""

    def check(self):
        unknown = [g for g in self.games if g not in GAMES] + [n for n in self.learners if n not in TABULAR_LEARNERS]
        if unknown:
            raise ValueError(
                f"unknown games or learners {unknown}; games: {list(GAMES)}, learners: {list(TABULAR_LEARNERS)}"
            )
        if self.beta <= 0 or any(b <= 0 for b in self.sweep) or self.iterations < 1 or self.responses < 2:
            raise ValueError("beta and sweep must be positive, iterations >= 1, responses >= 2")


def reference_policy(k: int, seed: int) -> torch.Tensor:
    """A reference μ that is not uniform (on rock-paper-scissors, uniform μ makes π* uniform)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    return torch.softmax(torch.randn(k, generator=generator, dtype=torch.float64), dim=0)


def build_game(name: str, config: GamesConfig, beta: float) -> Game:
    preferences = GAMES[name](config.responses, config.seed)
    return Game(preferences, reference_policy(len(preferences), config.seed), beta)


def run_games(config: GamesConfig) -> dict:
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"beta": config.beta, "iterations": config.iterations, "games": {}}
    traces: dict[str, dict[str, Trace]] = {}
    start: dict[str, float] = {}  # KL(π*‖μ): every learner starts from the reference
    for name in config.games:
        game = build_game(name, config, config.beta)
        equilibrium = regularized_equilibrium(game.preferences, game.reference, game.beta)
        start[name] = kl(equilibrium, game.reference)
        traces[name] = {n: play(n, game, config.iterations, equilibrium=equilibrium) for n in config.learners}
        results["games"][name] = {
            "equilibrium": equilibrium.tolist(),
            "bt_fit_error": bt_fit_error(game),
            "learners": {n: _summary(t, TABULAR_LEARNERS[n].target) for n, t in traces[name].items()},
            "sweep": [_sweep_row(build_game(name, config, b)) for b in config.sweep],
        }
    plots = [_plot_game(out, name, traces[name], config) for name in config.games]
    if "nash_mp" in config.learners:
        plots.append(_plot_nash_mp_rate(out, traces, start, config.beta))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report_text(results, config, plots), encoding="utf-8")
    print(f"report: {out / 'report.md'}")
    return results


def _summary(trace: Trace, target: str) -> dict:
    return {
        "target": target,
        "exploitability": trace.exploitability[-1],
        "kl_to_equilibrium": trace.kl_to_equilibrium[-1],
        "queries": trace.queries[-1],
    }


def _sweep_row(game: Game) -> dict:
    """At this β: the unregularized exploitability of the BT-RLHF policy and of π*."""
    nash = regularized_equilibrium(game.preferences, game.reference, game.beta)
    rlhf = rlhf_policy(game)
    return {
        "beta": game.beta,
        "rlhf": exploitability(rlhf, game.preferences, game.reference, 0.0),
        "nash": exploitability(nash, game.preferences, game.reference, 0.0),
    }


def _plot_game(out: Path, name: str, traces: dict[str, Trace], config: GamesConfig) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for learner, trace in traces.items():
        style = {"regularized": "-", "average": ":", "none": "--"}[TABULAR_LEARNERS[learner].target]
        values = [max(v, 1e-17) for v in trace.exploitability]
        axis.plot(range(1, len(values) + 1), values, style, label=learner)
    axis.set(yscale="log", xscale="log", xlabel="iteration", ylabel="exploitability")
    axis.set_title(f"{name}, β = {config.beta} (dotted: average iterate, unregularized game)")
    axis.legend(fontsize=7, ncol=2)
    path = out / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_nash_mp_rate(out: Path, traces: dict[str, dict[str, Trace]], start: dict[str, float], beta: float) -> Path:
    """KL(π*‖π_N) of Nash-MP against the bound (1 + 2β)^(-N/2) KL(π*‖μ), up to float64's floor."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for name, by_learner in traces.items():
        trace = by_learner["nash_mp"]
        bound = [start[name] * (1 + 2 * beta) ** (-n / 2) for n in trace.queries]
        shown = next((i for i, b in enumerate(bound) if b < 1e-16), len(bound))
        line = axis.plot(trace.queries[:shown], [max(v, 1e-17) for v in trace.kl_to_equilibrium[:shown]], label=name)
        axis.plot(trace.queries[:shown], bound[:shown], ":", color=line[0].get_color(), label=f"{name}: bound")
    axis.set(yscale="log", xlabel="preference queries N", ylabel="KL(π* ‖ π_N)", ylim=(1e-17, 10))
    axis.set_title(f"Nash-MP (η = 2, β = {beta}) and its (1 + 2β)^(-N/2) bound")
    axis.legend(fontsize=7)
    path = out / "nash_mp_rate.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _small(value: float) -> str:
    return f"{value:.1e}" if value >= 1e-15 else "< 1e-15"


def report_text(results: dict, config: GamesConfig, plots: list[Path]) -> str:
    games = list(results["games"])
    head = "| learner | target | " + " | ".join(games) + " |\n|---|---|" + "---:|" * len(games)
    rows = [
        f"| {n} | {TABULAR_LEARNERS[n].target} | "
        + " | ".join(_small(results["games"][g]["learners"][n]["exploitability"]) for g in games)
        + " |"
        for n in config.learners
    ]
    sweep_head = "| game | BT fit error | " + " | ".join(f"β = {b}" for b in config.sweep) + " |"
    sweep_rows = [
        f"| {g} | {results['games'][g]['bt_fit_error']:.3f} | "
        + " | ".join(f"{r['rlhf']:.3f} / {r['nash']:.3f}" for r in results["games"][g]["sweep"])
        + " |"
        for g in games
    ]
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plots)
    return f"""# Tabular preference games

{config.responses} responses (rock-paper-scissors: 3), seed {config.seed}, β = {config.beta}, {config.iterations} iterations of
each learner from the reference μ. Exploitability of the iterate each learner's theory is about:
the last iterate in the β-regularized game ("regularized" and "none"), the average iterate in the
unregularized game ("average"); 0 means the equilibrium.

{head}
{chr(10).join(rows)}

Bradley-Terry against Nash: the largest |P(y ≻ y') - σ(r_y - r_y')| of the best BT fit, then
per β the unregularized exploitability of the RLHF policy μ exp(r/β) / Z and of π*_β (RLHF / Nash).

{sweep_head}
|---|---:|{"---:|" * len(config.sweep)}
{chr(10).join(sweep_rows)}

{images}
"""

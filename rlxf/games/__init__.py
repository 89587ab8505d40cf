"""Tabular preference games: K responses, a preference matrix P[i, j] = P(y_i ≻ y_j), a reference
μ, the exact β-regularized Nash equilibrium, and every preference learner of rlxf run on them in
closed form, where the right answer is known (``rlxf games``; docs/games.md)."""

from rlxf.games.equilibrium import exploitability, kl, regularized_equilibrium
from rlxf.games.learners import TABULAR_LEARNERS, play
from rlxf.games.matrices import GAMES, Game, random_intransitive, rock_paper_scissors, transitive

__all__ = [
    "GAMES",
    "Game",
    "TABULAR_LEARNERS",
    "exploitability",
    "kl",
    "play",
    "random_intransitive",
    "regularized_equilibrium",
    "rock_paper_scissors",
    "transitive",
]

"""The tabular testbed: the exact equilibrium by hand, and each learner converging where its paper
proves it does (and the Bradley-Terry learners failing where intransitive preferences make them)."""

import math

import pytest
import torch

from rlxf.games import exploitability, kl, play, random_intransitive, regularized_equilibrium, rock_paper_scissors
from rlxf.games.bradley_terry import bt_fit_error, rlhf_policy
from rlxf.games.learners import TABULAR_LEARNERS, mirror_descent
from rlxf.games.matrices import Game, check_preference_matrix, transitive
from rlxf.games.testbed import GamesConfig, reference_policy, run_games


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


RPS = Game(rock_paper_scissors(), t(0.5, 0.3, 0.2), 0.1)
RANDOM = Game(random_intransitive(5, seed=0), reference_policy(5, 0), 0.1)


def test_two_responses_have_a_closed_form_equilibrium():
    # P(y1 ≻ y2) = 0.75, μ uniform, β = 0.25: π*(y1) = σ((0.75 - 0.5) / 0.25) = σ(1) = 0.731059
    game = Game(t(0.5, 0.75, 0.25, 0.5).view(2, 2), t(0.5, 0.5), 0.25)
    equilibrium = regularized_equilibrium(game.preferences, game.reference, game.beta)
    assert equilibrium.tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))], abs=1e-12)
    # expl(μ) = β log(½ e^{0.5/β·...}) ...: Pμ = (0.625, 0.375), so β logsumexp(log ½ + Pμ/β) - ½
    #         = 0.25 log(½ e^{2.5} + ½ e^{1.5}) - 0.5 = 0.030029 (KL(μ‖μ) = 0)
    assert exploitability(game.reference, game.preferences, game.reference, 0.25) == pytest.approx(0.030029, abs=1e-6)


def test_rock_paper_scissors_equilibrium_is_the_fixed_point_and_uniform_for_a_uniform_reference():
    equilibrium = regularized_equilibrium(RPS.preferences, RPS.reference, RPS.beta)
    assert equilibrium.tolist() == pytest.approx([0.325867, 0.386174, 0.287958], abs=1e-6)
    fixed = torch.softmax(RPS.reference.log() + RPS.preferences @ equilibrium / RPS.beta, 0)
    assert torch.allclose(fixed, equilibrium, atol=1e-12)
    uniform = regularized_equilibrium(RPS.preferences, torch.full((3,), 1 / 3, dtype=torch.float64), 0.01)
    assert torch.allclose(uniform, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("beta", [1.0, 0.01, 0.001])
def test_the_solver_reaches_the_equilibrium_at_small_beta(beta):
    # plain Newton from log μ stops at wrong points for β = 0.01; continuation in β does not
    preferences = random_intransitive(8, seed=4)
    reference = reference_policy(8, 4)
    equilibrium = regularized_equilibrium(preferences, reference, beta)
    assert exploitability(equilibrium, preferences, reference, beta) < 1e-10
    assert exploitability(reference, preferences, reference, beta) > 1e-3  # the reference is not it


def test_exploitability_is_zero_only_at_the_equilibrium_and_the_matrices_are_preference_matrices():
    for preferences in (rock_paper_scissors(), random_intransitive(6, 1), transitive(6, 1)):
        check_preference_matrix(preferences)
    with pytest.raises(ValueError, match="P\\[i, j\\] \\+ P\\[j, i\\] = 1"):
        check_preference_matrix(t(0.5, 0.9, 0.9, 0.5).view(2, 2))
    equilibrium = regularized_equilibrium(RANDOM.preferences, RANDOM.reference, RANDOM.beta)
    nudged = torch.softmax(equilibrium.log() + 0.01 * t(1, -1, 0, 0, 0), 0)
    assert exploitability(nudged, RANDOM.preferences, RANDOM.reference, RANDOM.beta) > 1e-7


@pytest.mark.parametrize("game", [RPS, RANDOM], ids=["rps", "random"])
@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_nash_mp_kl_falls_at_least_at_its_papers_rate(game, beta):
    """Tiapkin et al. (2025): KL(π*‖π_k) ≤ (1 + 2β)^(-N/2) KL(π*‖π_0) after N = 2k queries."""
    game = Game(game.preferences, game.reference, beta)
    equilibrium = regularized_equilibrium(game.preferences, game.reference, beta)
    trace = play("nash_mp", game, 200, equilibrium=equilibrium)
    start = kl(equilibrium, game.reference)
    for queries, divergence in zip(trace.queries, trace.kl_to_equilibrium):
        bound = (1 + 2 * beta) ** (-queries / 2) * start
        if bound < 1e-11:  # float64's floor for a KL
            break
        assert divergence <= bound, (queries, divergence, bound)


@pytest.mark.parametrize(
    "learner, iterations, bound",
    [
        ("egpo", 200, 1e-12),
        ("nash_mp", 200, 1e-12),
        ("online_ipo", 2000, 1e-8),
        ("inpo", 2000, 1e-8),
        ("nash_md", 500, 1e-5),
    ],
)
def test_the_nash_learners_last_iterate_reaches_the_regularized_equilibrium(learner, iterations, bound):
    for game in (RPS, RANDOM):
        equilibrium = regularized_equilibrium(game.preferences, game.reference, game.beta)
        trace = play(learner, game, iterations, equilibrium=equilibrium)
        assert trace.exploitability[-1] < bound, (learner, trace.exploitability[-1])
        assert trace.exploitability[-1] < trace.exploitability[0] / 100


def test_self_play_learners_average_iterate_reaches_the_unregularized_equilibrium_and_the_last_cycles():
    equilibrium = regularized_equilibrium(RPS.preferences, RPS.reference, RPS.beta)
    for learner in ("sppo", "spo"):
        trace = play(learner, RPS, 20_000, equilibrium=equilibrium)
        assert trace.exploitability[-1] < 5e-3  # the average, in the unregularized game
        assert exploitability(trace.policy, RPS.preferences, RPS.reference, 0.0) > 0.05  # the last iterate cycles


def test_bradley_terry_learners_never_reach_the_equilibrium_of_intransitive_preferences():
    equilibrium = regularized_equilibrium(RANDOM.preferences, RANDOM.reference, RANDOM.beta)
    cpl = play("cpl", RANDOM, 600, equilibrium=equilibrium).exploitability
    assert abs(cpl[-100] - cpl[-1]) < 0.02 * cpl[-1] and cpl[-1] > 1e-2  # settles where a best response gains
    online_dpo = play("online_dpo", RANDOM, 1500, equilibrium=equilibrium).exploitability
    # self-play on a BT loss at a step of 1 keeps cycling: exploitability swings between about 0.007 and 0.034
    assert min(online_dpo[100:]) > 5e-3 and sum(online_dpo[500:]) / 1000 > 0.02


def test_bt_fits_transitive_preferences_exactly_and_its_rlhf_policy_is_exploited_on_intransitive_ones():
    transitive_game = Game(transitive(5, 0), reference_policy(5, 0), 0.01)
    rps_game = Game(RPS.preferences, RPS.reference, 0.01)
    assert bt_fit_error(transitive_game) < 1e-6 and bt_fit_error(rps_game) > 0.4
    # as β shrinks, RLHF finds the Condorcet winner of transitive preferences ...
    assert (
        exploitability(rlhf_policy(transitive_game), transitive_game.preferences, transitive_game.reference, 0.0) < 1e-3
    )
    # ... but on rock-paper-scissors plays one hand, which its counter beats: unregularized exploitability 1/2
    rlhf = exploitability(rlhf_policy(rps_game), rps_game.preferences, rps_game.reference, 0.0)
    nash = regularized_equilibrium(rps_game.preferences, rps_game.reference, 0.01)
    assert rlhf > 0.45 and exploitability(nash, rps_game.preferences, rps_game.reference, 0.0) < 0.02


def test_the_games_command_writes_tables_and_plots(tmp_path):
    results = run_games(GamesConfig(output_dir=str(tmp_path), iterations=50, sweep=[0.1], responses=4))
    report = (tmp_path / "report.md").read_text()
    assert set(results["games"]) == {"rock_paper_scissors", "random_intransitive", "transitive"}
    for learner in TABULAR_LEARNERS:
        assert f"| {learner} |" in report
    assert all((tmp_path / f"{g}.png").stat().st_size > 5000 for g in results["games"])
    assert (tmp_path / "nash_mp_rate.png").is_file() and (tmp_path / "results.json").is_file()
    with pytest.raises(ValueError, match="unknown games or learners"):
        GamesConfig(learners=["nash_mdd"])


# three responses, μ = (0.5, 0.3, 0.2), β = 0.5, from π = (0.2, 0.5, 0.3), η = 1
STEP = Game(t(0.5, 0.8, 0.3, 0.2, 0.5, 0.6, 0.7, 0.4, 0.5).view(3, 3), t(0.5, 0.3, 0.2), 0.5)
START = t(0.2, 0.5, 0.3).log()


def test_one_step_of_each_tabular_learner_by_hand():
    """Each paper's update written out (normalize at the end of each line):
    mirror descent: π^(1-ηβ) μ^(ηβ) exp(η Pπ)                      -> (0.358791, 0.389738, 0.251471)
    Nash-MD: m = π^½ μ^½, then m exp(η P m) (against m, not π)    -> (0.357157, 0.378365, 0.264478)
    EGPO: π½ = the mirror-descent step, then π^½ μ^½ exp(η Pπ½)   -> (0.356646, 0.376290, 0.267064)
      (the full step taken from π½ instead would give (0.453034, 0.315073, 0.231893))
    multiplicative weights, η = 0.05: π exp(η Pπ)                  -> (0.2009015, 0.4992493, 0.2998492)
    """
    from rlxf.games.learners import egpo, multiplicative_weights, nash_md

    step = {
        "md": mirror_descent(START, STEP, 0, 1.0),
        "nash_md": nash_md(START, STEP, 0, 1.0),
        "egpo": egpo(START, STEP, 0, 1.0),
        "mwu": multiplicative_weights(START, STEP, 0, 0.05),
    }
    assert step["md"].exp().tolist() == pytest.approx([0.358791, 0.389738, 0.251471], abs=1e-6)
    assert step["nash_md"].exp().tolist() == pytest.approx([0.357157, 0.378365, 0.264478], abs=1e-6)
    assert step["egpo"].exp().tolist() == pytest.approx([0.356646, 0.376290, 0.267064], abs=1e-6)
    assert step["mwu"].exp().tolist() == pytest.approx([0.2009015, 0.4992493, 0.2998492], abs=1e-7)


def test_one_step_of_the_bradley_terry_learners_by_hand():
    from rlxf.games.learners import cpl_step, online_dpo_step

    # two responses, μ uniform, P(y0 ≻ y1) = 0.75, β = 0.5, from π = μ (h = 0): the online-DPO gradient
    # on θ_0 is Σ π_i π_j β (½ - P_ij)(1[i=0] - 1[j=0]) = 2 · ¼ · 0.5 · (½ - 0.75) = -0.0625; a step of 1
    # moves θ by ±0.0625, so π(y0) = σ(0.125) = 0.531209
    game = Game(t(0.5, 0.75, 0.25, 0.5).view(2, 2), t(0.5, 0.5), 0.5)
    assert online_dpo_step(game.reference.log(), game, 0, 1.0).exp()[0].item() == pytest.approx(0.531209, abs=1e-6)
    # CPL from pairs of μ labelled by P moves toward the preferred response
    assert cpl_step(game.reference.log(), game, 0, 1.0).exp()[0].item() > 0.5


def test_self_play_on_an_intransitive_game_of_five():
    equilibrium = regularized_equilibrium(RANDOM.preferences, RANDOM.reference, RANDOM.beta)
    trace = play("sppo", RANDOM, 20_000, equilibrium=equilibrium)
    assert trace.exploitability[-1] < 5e-3 < trace.exploitability[100]

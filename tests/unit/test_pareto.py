from rlxf.eval.pareto import dominates, pareto_front


def test_the_front_keeps_the_points_no_other_beats_everywhere():
    points = [(1.0, 0.0), (0.5, 0.5), (0.4, 0.4), (0.0, 1.0), (0.5, 0.5)]
    # (0.4, 0.4) is beaten by (0.5, 0.5); the two equal points do not dominate each other
    assert pareto_front(points) == [0, 1, 3, 4]
    assert dominates((1, 1), (1, 0)) and not dominates((1, 0), (1, 0)) and not dominates((1, 0), (0, 1))

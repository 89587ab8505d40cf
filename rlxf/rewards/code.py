"""Rewards from unit tests, run in a sandbox (``rlxf/rewards/sandbox``).

Each completion runs in a sandbox of its own: by default isolated by the operating system
with bubblewrap, under resource limits, with the tests' verdicts decided by the trainer from the
values the program computes (``sandbox/verdicts.py``), so a program can pass a test only by
computing its expected value. See docs/security.md for what is and is not defended.
"""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from rlxf.rewards.base import RewardBatch, single_source
from rlxf.rewards.sandbox import ISOLATIONS, ExecutionResult, SandboxLimits, run_tests
from rlxf.rewards.sandbox.isolation import bwrap_path

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
UNISOLATED = (
    "unit-test rewards ran with sandbox=process: programs were not isolated by the operating system "
    "(resource limits and an audit hook only)"
)


def extract_code(completion: str) -> str:
    """The last fenced Python block of a completion, or the whole text if there is none."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


@dataclass
class UnitTestReward:
    """Reward = share of unit tests passed (or 1/0 for all passed with ``all_or_nothing``).

    MBPP layout (Austin et al., "Program Synthesis with Large Language Models", 2021): the
    completion's code, then ``test_setup_code``, then each ``assert`` of ``test_list``.
    """

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    all_or_nothing: bool = False
    workers: int = 2
    sandbox: str = "bwrap"
    """bwrap: isolated by the operating system (bubblewrap must be installed); process: resource
    limits and an audit hook only, for machines without bubblewrap, flagged in the metrics."""
    name: str = "unit_tests"

    def __post_init__(self):
        if self.sandbox not in ISOLATIONS:
            raise ValueError(f"unit_tests sandbox must be one of {ISOLATIONS}, got {self.sandbox!r}")
        if self.sandbox == "process":
            warnings.warn(UNISOLATED, stacklevel=2)
        else:  # no bubblewrap: SandboxUnavailable naming the package now, not after a model has loaded
            bwrap_path()

    def score(
        self,
        prompts,
        completions: Sequence[str],
        *,
        tests: Sequence[Sequence[str]],
        setup: Sequence[str] | None = None,
        **context,
    ) -> RewardBatch:
        setup = setup or [""] * len(completions)

        def one(index: int) -> ExecutionResult:
            program = extract_code(completions[index]) + "\n" + (setup[index] or "")
            return run_tests(program, tests[index], self.limits, isolation=self.sandbox)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = list(pool.map(one, range(len(completions))))
        values = [float(all(r.passed) and bool(r.passed)) if self.all_or_nothing else r.fraction for r in results]
        details = [{"passed": r.passed, "error": r.error, "timed_out": r.timed_out} for r in results]
        batch = single_source(self.name, values, details)
        if self.sandbox == "process":
            batch.flags["sandbox/unisolated"] = 1.0
        return batch

"""Running untrusted programs: OS isolation (isolation.py, seccomp.py), a memory cgroup per sandbox
(cgroup.py), the in-sandbox harness (harness.py), and verdicts decided outside the sandbox (verdicts.py)."""

from rlxf.rewards.sandbox.isolation import SandboxUnavailable
from rlxf.rewards.sandbox.runner import ISOLATIONS, ExecutionResult, SandboxLimits, run_tests
from rlxf.rewards.sandbox.verdicts import UnsupportedTest, split_test

__all__ = [
    "ISOLATIONS",
    "ExecutionResult",
    "SandboxLimits",
    "SandboxUnavailable",
    "UnsupportedTest",
    "run_tests",
    "split_test",
]

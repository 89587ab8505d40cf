"""Rewards from unit tests, run in a sandboxed process.

Each completion runs in its own Python process (``sandbox_runner.py``), in a fresh
temporary directory, with resource limits (CPU time, memory, file size; process count for
non-root users), an empty network namespace when run as root, a wall-clock timeout that
kills its whole process group, and an audit hook (PEP 578) that refuses process creation,
networking, native-code loading and writes outside the directory. A hanging, forking,
flooding or escaping completion fails its tests; it cannot stall or harm the trainer.
Known gap: a program that writes a compiled extension module into its directory and
imports it runs native code unchecked; run untrusted code at scale in a container too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rlxf.rewards.base import RewardBatch, single_source

_RUNNER = Path(__file__).with_name("sandbox_runner.py")
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    output_bytes: int = 1 << 20
    processes: int = 1


@dataclass
class ExecutionResult:
    passed: list[bool]
    error: str | None
    timed_out: bool
    output: str

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def extract_code(completion: str) -> str:
    """The last fenced Python block of a completion, or the whole text if there is none."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def run_tests(program: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> ExecutionResult:
    """Run ``program`` then each test statement in a sandboxed interpreter."""
    nonce = secrets.token_hex(16)
    settings = {
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
        "output_bytes": limits.output_bytes,
        "processes": limits.processes,
    }
    with tempfile.TemporaryDirectory(prefix="rlxf-sandbox-") as workdir:
        stdout_path = Path(workdir) / ".stdout"
        with open(stdout_path, "wb") as stdout:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_RUNNER)],
                cwd=workdir,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir},
                start_new_session=True,
                close_fds=True,
            )
            timed_out = False
            try:
                job = json.dumps({"program": program, "tests": list(tests)})
                message = f"{nonce}\n{json.dumps(settings)}\n{job}\n"
                process.communicate(message.encode(), timeout=limits.timeout_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BrokenPipeError:
                pass
            finally:
                _kill_group(process)
        output = _tail(stdout_path, limits.output_bytes)
    return _parse(output, nonce, len(tests), timed_out)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _tail(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - min(limit, 65536)))
        return handle.read().decode("utf-8", errors="replace")


def _parse(output: str, nonce: str, count: int, timed_out: bool) -> ExecutionResult:
    for line in reversed(output.splitlines()):
        if line.startswith(nonce + " "):
            results = json.loads(line[len(nonce) + 1 :])
            return ExecutionResult(results["tests"], results["program"], False, output[-2000:])
    reason = "timed out" if timed_out else "the sandbox process died (limit reached or killed)"
    return ExecutionResult([False] * count, reason, timed_out, output[-2000:])


@dataclass
class UnitTestReward:
    """Reward = share of unit tests passed (or 1/0 for all passed with ``all_or_nothing``).

    MBPP layout (Austin et al., "Program Synthesis with Large Language Models", 2021): the
    completion's code, then ``test_setup_code``, then each ``assert`` of ``test_list``.
    """

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    all_or_nothing: bool = False
    workers: int = 2
    name: str = "unit_tests"

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
            return run_tests(program, tests[index], self.limits)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = list(pool.map(one, range(len(completions))))
        values = [float(all(r.passed) and bool(r.passed)) if self.all_or_nothing else r.fraction for r in results]
        details = [{"passed": r.passed, "error": r.error, "timed_out": r.timed_out} for r in results]
        return single_source(self.name, values, details)

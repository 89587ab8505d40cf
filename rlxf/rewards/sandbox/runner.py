"""Run a program and its unit tests in a sandbox; the parent decides every verdict."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from rlxf.rewards.sandbox.isolation import bwrap_command, check_isolation, interpreter_view, sandbox_uid
from rlxf.rewards.sandbox.verdicts import decode_line, split_test

_HARNESS = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")
ISOLATIONS = ("bwrap", "process")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    output_bytes: int = 1 << 20
    processes: int = 16  # tasks (threads and processes) the program may run, itself included
    open_files: int = 64


@dataclass
class ExecutionResult:
    passed: list[bool]
    error: str | None
    timed_out: bool
    output: str

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_tests(
    program: str,
    tests: Sequence[str],
    limits: SandboxLimits = SandboxLimits(),
    *,
    isolation: str = "bwrap",
    audit_hook: bool = True,
) -> ExecutionResult:
    """Run ``program``, then the candidate expressions of each ``assert`` test, in a sandbox.

    ``isolation="bwrap"`` isolates the program with the operating system (``isolation.py``);
    ``"process"`` runs it as the trainer's user with resource limits and the audit hook only.
    ``audit_hook`` adds the in-process hook as a second layer."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"sandbox must be one of {ISOLATIONS}, got {isolation!r}")
    splits = [split_test(test) for test in tests]
    candidates = [c for s in splits for c in s.candidates]
    with tempfile.TemporaryDirectory(prefix="rlxf-sandbox-") as private:
        workdir = Path(private, "work")
        workdir.mkdir()
        output_path, results_path = Path(private, "output"), Path(private, "results")
        with open(output_path, "wb") as output, open(results_path, "wb") as results:
            uid = sandbox_uid() if isolation == "bwrap" else None
            job = {
                "program": program,
                "candidates": candidates,
                "limits": {**_limits(limits, isolation, uid)},
                "uid": uid,
                "audit_hook": audit_hook,
                "results_fd": results.fileno(),
            }
            timed_out = _run(_command(isolation, workdir, uid), job, workdir, output, results, limits)
        messages = _messages(results_path, len(candidates))
        output_text = _tail(output_path, limits.output_bytes)
    return _verdicts(splits, messages, timed_out, output_text)


def _limits(limits: SandboxLimits, isolation: str, uid: int | None) -> dict:
    # RLIMIT_NPROC counts the tasks of the sandbox's user: its own uid under root; in a user
    # namespace, bubblewrap's init beside the program
    nproc = limits.processes + (1 if isolation == "bwrap" and uid is None else 0)
    settings = {k: v for k, v in asdict(limits).items() if k not in ("timeout_seconds", "processes")}
    return {**settings, "nproc": nproc}


def _command(isolation: str, workdir: Path, uid: int | None) -> list[str]:
    interpreter = [interpreter_view().executable, "-I", "-S", "-X", "utf8", "-c", _HARNESS]
    if isolation == "process":
        return interpreter
    check_isolation()
    if uid is not None:
        os.chown(workdir, uid, uid)
    return bwrap_command(workdir, uid, interpreter)


def _run(command, job, workdir, output, results, limits: SandboxLimits) -> bool:
    """Runs the sandbox to its end or its timeout; True when it timed out."""
    process = subprocess.Popen(
        command,
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir)},
        pass_fds=(results.fileno(),),
        start_new_session=True,
    )
    try:
        process.communicate((json.dumps(job) + "\n").encode(), timeout=limits.timeout_seconds)
        return False
    except subprocess.TimeoutExpired:
        return True
    except BrokenPipeError:
        return False
    finally:
        _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _messages(path: Path, count: int) -> dict:
    """The sandbox's messages: each candidate's first value or error, and the program's error."""
    found: dict = {}
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                message = decode_line(line)
            except (ValueError, TypeError, RecursionError, OverflowError):
                continue  # a torn or forged line stands for nothing
            if "program_error" in message:
                found.setdefault("program_error", str(message["program_error"])[:500])
            if message.get("ran") is True:
                found["ran"] = True
            index = message.get("index")
            if type(index) is int and 0 <= index < count and ("value" in message or "error" in message):
                found.setdefault(index, message)
    return found


def _verdicts(splits, messages: dict, timed_out: bool, output: str) -> ExecutionResult:
    """A test passes when the program ran to its end and every candidate value came back and
    satisfies the test's check."""
    error = messages.get("program_error")
    if error is None and not messages.get("ran"):
        error = "timed out" if timed_out else "the sandbox process died (limit reached or killed)"
    passed, offset = [], 0
    for split in splits:
        answers = [messages.get(offset + k, {}) for k in range(len(split.candidates))]
        offset += len(split.candidates)
        values = all("value" in a for a in answers)
        passed.append(error is None and values and split.passes([a["value"] for a in answers]))
    return ExecutionResult(passed, error, timed_out, output[-2000:])


def _tail(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - min(limit, 65536)))
        return handle.read().decode("utf-8", errors="replace")


__all__ = ["ISOLATIONS", "ExecutionResult", "SandboxLimits", "run_tests"]

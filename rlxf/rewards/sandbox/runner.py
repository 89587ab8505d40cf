"""Run a program and its unit tests in a sandbox; the parent decides every verdict."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from rlxf.rewards.sandbox.cgroup import in_group, memory_group
from rlxf.rewards.sandbox.isolation import (
    bwrap_command,
    check_isolation,
    interpreter_view,
    sandbox_uid,
    seccomp_descriptor,
)
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
    disk_bytes: int = 64 << 20  # bwrap: the size of its /tmp, a tmpfs (held in memory)
    results_bytes: int = 256 << 10  # the most of the results channel the trainer reads


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
    private = tempfile.mkdtemp(prefix="rlxf-sandbox-")
    try:
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
            # the cgroup bounds the sandbox's memory as a whole; RLIMIT_AS only each process's
            with seccomp_descriptor() as seccomp_fd, memory_group(limits.memory_bytes + limits.disk_bytes) as group:
                command = in_group(group, _command(isolation, uid, limits, seccomp_fd))
                fds = tuple(fd for fd in (results.fileno(), seccomp_fd) if fd is not None)
                timed_out, status = _run(command, job, workdir, output, fds, limits)
        messages = _messages(results_path, len(candidates), limits.results_bytes)
        output_text = _tail(output_path, limits.output_bytes)
    finally:
        _remove(private)
    return _verdicts(splits, messages, timed_out, status, output_text)


def _remove(folder: str) -> None:
    """Removes what the sandbox left, however deep (``shutil.rmtree`` recurses: 1,000 nested
    folders made by a program would raise RecursionError in the trainer)."""
    try:
        shutil.rmtree(folder)
    except (RecursionError, OSError):
        subprocess.run(["rm", "-rf", "--one-file-system", folder], check=False)


def _limits(limits: SandboxLimits, isolation: str, uid: int | None) -> dict:
    # RLIMIT_NPROC counts the tasks of the sandbox's user: its own uid under root; in a user
    # namespace, bubblewrap's init beside the program
    nproc = limits.processes + (1 if isolation == "bwrap" and uid is None else 0)
    trainer_side = ("timeout_seconds", "processes", "disk_bytes", "results_bytes")
    settings = {k: v for k, v in asdict(limits).items() if k not in trainer_side}
    return {**settings, "nproc": nproc}


def _command(isolation: str, uid: int | None, limits: SandboxLimits, seccomp_fd: int | None) -> list[str]:
    interpreter = [interpreter_view().executable, "-I", "-S", "-X", "utf8", "-c", _HARNESS]
    if isolation == "process":
        return interpreter
    check_isolation()
    return bwrap_command(uid, interpreter, limits.disk_bytes, seccomp_fd)


def _run(command, job: dict, workdir: Path, output, fds: tuple[int, ...], limits: SandboxLimits):
    """Runs the sandbox to its end or its timeout: whether it timed out, and its exit status. The
    job is its stdin as a file, so no write to a pipe can block the trainer."""
    job_path = workdir.with_name("job")
    job_path.write_text(json.dumps(job) + "\n", encoding="utf-8")
    with open(job_path, "rb") as stdin:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=stdin,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir)},
            pass_fds=fds,
            start_new_session=True,
        )
    exited = _wait(process, limits.timeout_seconds)
    _kill_group(process)
    return (False, process.returncode) if exited else (True, None)


def _wait(process: subprocess.Popen, timeout: float) -> bool:
    """Whether ``process`` exits within ``timeout``, seen the moment it does through a pidfd
    (``Popen.wait`` polls with a backoff of up to 50 ms: a third of a sandbox's time)."""
    try:
        descriptor = os.pidfd_open(process.pid)
    except OSError:  # Linux before 5.3
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([descriptor], [], [], timeout)[0])
    finally:
        os.close(descriptor)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _messages(path: Path, count: int, limit: int) -> dict:
    """The sandbox's messages: each candidate's last value or error (the harness writes after the
    program, so a line the program forged earlier is overwritten), and the program's error. A
    channel longer than ``limit`` stands for nothing: a program could pad it so that the trainer
    reads its forged lines and never the harness's."""
    if path.stat().st_size > limit:
        return {"channel_error": f"the results channel passed results_bytes ({limit}): a value too large or forged"}
    found: dict = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle.read(limit).splitlines():
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
                found[index] = message
    return found


def _verdicts(splits, messages: dict, timed_out: bool, status: int | None, output: str) -> ExecutionResult:
    """A test passes when the program ran to its end, the sandbox exited cleanly, and every
    candidate value came back and satisfies the test's check."""
    error = messages.get("channel_error") or messages.get("program_error")
    if timed_out:
        error = "timed out"
    elif status != 0:
        error = f"the sandbox process died (exit status {status}: a limit was reached or it was killed)"
    elif error is None and not messages.get("ran"):
        error = "the sandbox process died (limit reached or killed)"
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

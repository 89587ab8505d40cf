"""What confines a program beyond its namespaces: the seccomp filter (checked instruction by
instruction against the verdicts it must give), and each limit and flag of the sandbox probed from
inside, on the path this trainer takes (root here in CI: a uid of its own) and on the other one
(an unprivileged trainer: a user namespace), so removing any of them fails a test."""

import errno
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from rlxf.rewards.sandbox import SandboxLimits, run_tests
from rlxf.rewards.sandbox.seccomp import CLONE_NEWUSER, sandbox_filter, syscall_numbers

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(timeout_seconds=20, cpu_seconds=5, memory_bytes=256 << 20, output_bytes=64 << 10)

ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
X86_64, I386, AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7


def run_filter(program: bytes, arch: int, number: int, flags: int = 0) -> int:
    """The verdict of a classic-BPF seccomp ``program`` for one system call (a small interpreter
    of the four instructions it may use)."""
    data = struct.pack("=iIQ6Q", number, arch, 0, flags, 0, 0, 0, 0, 0)
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        op, jump_true, jump_false, value = code[pc]
        pc += 1
        if op == 0x20:
            (accumulator,) = struct.unpack_from("=I", data, value)
        elif op == 0x06:
            return value
        else:
            taken = {0x15: accumulator == value, 0x35: accumulator >= value, 0x45: bool(accumulator & value)}[op]
            pc += jump_true if taken else jump_false


@pytest.mark.parametrize(
    "machine, arch, numbers",
    [
        ("x86_64", X86_64, {"read": 0, "clone": 56, "unshare": 272, "clone3": 435, "bpf": 321, "setns": 308}),
        ("aarch64", AARCH64, {"read": 63, "clone": 220, "unshare": 97, "clone3": 435, "bpf": 280, "setns": 268}),
    ],
)
def test_the_filter_refuses_new_user_namespaces_and_foreign_abis_and_allows_the_rest(machine, arch, numbers):
    program = sandbox_filter(machine)
    verdict = lambda name, flags=0, on=arch: run_filter(program, on, numbers[name], flags)  # noqa: E731
    assert verdict("read") == ALLOW
    assert verdict("unshare", CLONE_NEWUSER) == EPERM
    assert verdict("unshare", 0x00020000) == ALLOW  # a mount namespace of its own is harmless without privileges
    assert verdict("clone", CLONE_NEWUSER | 0x11) == EPERM
    assert verdict("clone", 0x01200011) == ALLOW  # fork's flags
    assert verdict("clone3") == ENOSYS  # its flags sit behind a pointer: the C library falls back to clone
    assert verdict("bpf") == EPERM and verdict("setns") == EPERM
    assert verdict("read", on=I386) == EPERM  # int 0x80 with i386 numbers
    assert run_filter(program, arch, 0x40000000 | numbers["unshare"], CLONE_NEWUSER) == EPERM  # x32


def test_the_filter_refuses_each_named_call_and_the_numbers_are_the_kernels():
    for machine, arch in (("x86_64", X86_64), ("aarch64", AARCH64)):
        program, numbers = sandbox_filter(machine), syscall_numbers(machine)
        for name, number in numbers.items():
            expected = ENOSYS if name == "clone3" else ALLOW if name in ("clone", "unshare") else EPERM
            assert run_filter(program, arch, number) == expected, (machine, name)
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if header.is_file():  # the kernel's own table, where the headers are installed
        kernel = dict(re.findall(r"#define __NR_(\w+) (\d+)", header.read_text()))
        assert {name: int(kernel[name]) for name in syscall_numbers("x86_64")} == syscall_numbers("x86_64")


def test_threads_fork_and_subprocess_still_work_under_the_filter():
    program = """
    import os, subprocess, sys, threading
    def attack():
        done = []
        thread = threading.Thread(target=lambda: done.append(1)); thread.start(); thread.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        out = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout
        return done == [1] and os.waitstatus_to_exitcode(status) == 7 and out.strip() == '42'
    """
    assert probe(program) == 1.0


# Each program defines attack(), true when it got past a confinement.
PROBES = {
    "nested user namespace": """
        import ctypes
        def attack():
            return ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0
        """,
    "io_uring": """
        import ctypes
        def attack():
            params = ctypes.create_string_buffer(120)
            return ctypes.CDLL(None, use_errno=True).syscall(425, 8, params) >= 0  # io_uring_setup
        """,
    "the trainer's processes": """
        import os
        def attack():
            return len([p for p in os.listdir('/proc') if p.isdigit()]) > 3  # bubblewrap's init and the program
        """,
    "a write to the root": """
        def attack():
            try:
                open('/escaped', 'w').write('x')
                return True
            except OSError:
                return False
        """,
    "the trainer's environment": """
        import os
        def attack():
            return any('PROBE_SENTINEL' in key for key in os.environ)
        """,
    "a capability": """
        def attack():
            caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))]
            return any(int(l.split()[1], 16) for l in caps)
        """,
    "root's group": """
        import os
        def attack():
            return 0 in (os.getgid(), os.getegid(), *os.getgroups())
        """,
    "a file past the output limit": """
        import os
        def attack():
            try:
                with open('big', 'wb') as f:
                    f.write(b'x' * (65 << 10))
            except OSError:
                pass
            return os.path.getsize('big') > (64 << 10)
        """,
    "memory past the limit": """
        def attack():
            try:
                block = bytearray(300 << 20)
                return len(block) > 0
            except MemoryError:
                return False
        """,
}


def probe(program: str) -> float:
    return run_tests(textwrap.dedent(program), ["assert attack() == True"], LIMITS, audit_hook=False).fraction


@pytest.mark.parametrize("name", PROBES)
def test_each_confinement_holds_for_this_trainer(name, monkeypatch):
    monkeypatch.setenv("RLXF_PROBE_SENTINEL", "1")
    assert probe(PROBES[name]) == 0.0


def standalone_copy(folder: Path) -> Path:
    """The sandbox package alone, where an unprivileged user can read it (it needs no more)."""
    package = folder / "rlxf" / "rewards"
    shutil.copytree(REPO / "rlxf" / "rewards" / "sandbox", package / "sandbox")
    for init in (folder / "rlxf" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    return folder


UNPRIVILEGED_RUN = """
import json, sys, textwrap
sys.path.insert(0, sys.argv[1])
from rlxf.rewards.sandbox import SandboxLimits, run_tests
limits = SandboxLimits(**json.loads(sys.argv[2]))
probes = json.loads(sys.argv[3])
scores = {name: run_tests(textwrap.dedent(p), ['assert attack() == True'], limits, audit_hook=False).fraction
          for name, p in probes.items()}
scores['honest'] = run_tests('def f(): return 1', ['assert f() == 1'], limits, audit_hook=False).fraction
print(json.dumps(scores))
"""


def test_each_confinement_holds_for_an_unprivileged_trainer():
    """The user-namespace path, taken by a trainer that is not root: run as nobody, with the
    system's Python (this checkout's interpreter may sit in a folder nobody cannot read)."""
    python, setpriv = "/usr/bin/python3", shutil.which("setpriv")
    if os.geteuid() != 0:
        pytest.skip("this trainer is unprivileged already: the other tests take the user-namespace path")
    if setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs setpriv (util-linux) and /usr/bin/python3 to run as nobody")
    folder = Path(tempfile.mkdtemp(prefix="rlxf-unprivileged-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        standalone_copy(folder)
        limits = {k: getattr(LIMITS, k) for k in ("timeout_seconds", "cpu_seconds", "memory_bytes", "output_bytes")}
        command = [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-I", "-c"]
        command += [UNPRIVILEGED_RUN, str(folder), json.dumps(limits), json.dumps(PROBES)]
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "RLXF_PROBE_SENTINEL": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd="/tmp", check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        scores = json.loads(done.stdout)
    finally:
        shutil.rmtree(folder)
    assert scores == {**dict.fromkeys(PROBES, 0.0), "honest": 1.0}

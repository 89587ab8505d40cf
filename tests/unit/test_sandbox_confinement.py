"""What confines a program beyond its namespaces: the seccomp filter (checked instruction by
instruction against the verdicts it must give), and each limit and flag of the sandbox probed from
inside, on the path this trainer takes (root here in CI: a uid of its own) and on the other one
(an unprivileged trainer: a user namespace), so removing any of them fails a test."""

import contextlib
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

import rlxf.rewards.sandbox.isolation as bwrap_isolation
from rlxf.rewards.sandbox import SandboxLimits, cgroup, run_tests, runner
from rlxf.rewards.sandbox.cgroup import memory_group
from rlxf.rewards.sandbox.seccomp import CLONE_NEWUSER, SOCKET_FAMILIES, sandbox_filter, syscall_numbers

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(timeout_seconds=20, cpu_seconds=5, memory_bytes=256 << 20, output_bytes=64 << 10)

ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
EAFNOSUPPORT = 0x00050000 | errno.EAFNOSUPPORT
AF_NETLINK, AF_PACKET, AF_VSOCK = 16, 17, 40
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
    # with a first argument of 0: clone with no flags, a socket of family AF_UNSPEC
    checked = {"clone3": ENOSYS, "clone": ALLOW, "unshare": ALLOW, "socket": EAFNOSUPPORT, "socketpair": EAFNOSUPPORT}
    for machine, arch in (("x86_64", X86_64), ("aarch64", AARCH64)):
        program, numbers = sandbox_filter(machine), syscall_numbers(machine)
        for name, number in numbers.items():
            expected = checked.get(name, EPERM)
            assert run_filter(program, arch, number) == expected, (machine, name)
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if header.is_file():  # the kernel's own table, where the headers are installed
        kernel = dict(re.findall(r"#define __NR_(\w+) (\d+)", header.read_text()))
        assert {name: int(kernel[name]) for name in syscall_numbers("x86_64")} == syscall_numbers("x86_64")


@pytest.mark.parametrize("machine, arch", [("x86_64", X86_64), ("aarch64", AARCH64)])
def test_sockets_only_of_the_families_the_network_namespace_confines(machine, arch):
    program, numbers = sandbox_filter(machine), syscall_numbers(machine)
    assert set(SOCKET_FAMILIES.values()) == {1, 2, 10}  # AF_UNIX, AF_INET, AF_INET6
    for call in ("socket", "socketpair"):
        for family in (1, 2, 10):
            assert run_filter(program, arch, numbers[call], family) == ALLOW, (call, family)
        for family in (0, 3, AF_NETLINK, AF_PACKET, AF_VSOCK, 1 << 20 | 2):
            assert run_filter(program, arch, numbers[call], family) == EAFNOSUPPORT, (call, family)
    for call in ("shmget", "semget", "msgget"):  # memory outside every address space
        assert run_filter(program, arch, numbers[call]) == EPERM, call


def test_a_root_trainer_gives_each_sandbox_a_uid_no_tool_shows_negative(monkeypatch):
    monkeypatch.setattr(bwrap_isolation.os, "geteuid", lambda: 0)
    for draw in (lambda n: 0, lambda n: n - 1):  # the smallest and the largest the random part gives
        monkeypatch.setattr(bwrap_isolation.secrets, "randbelow", draw)
        assert 10**9 <= bwrap_isolation.sandbox_uid() < 2**31


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
    "a vsock socket (which no network namespace confines)": """
        import socket
        def attack():
            try:
                socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
                return True
            except OSError:
                return False
        """,
    "a netlink or packet socket": """
        import socket
        def attack():
            for family, kind in ((socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_DGRAM)):
                try:
                    socket.socket(family, kind).close()
                    return True
                except OSError:
                    pass
            return False
        """,
    "System V shared memory": """
        import ctypes
        def attack():
            libc = ctypes.CDLL(None, use_errno=True)
            return libc.shmget(0, 1 << 20, 0o1600) >= 0 or libc.semget(0, 1, 0o1600) >= 0 or libc.msgget(0, 0o1600) >= 0
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


HOLDERS = """
import os, time
def attack():
    read, write = os.pipe()
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            block = b'x' * (200 << 20)  # every page written, so resident
            os.write(write, b'+')
            time.sleep(4)
            os._exit(0)
        children.append(pid)
    os.close(write)
    held = b''
    while len(held) < 4 and (chunk := os.read(read, 4)):  # EOF once every child has gone
        held += chunk
    for pid in children:
        os.kill(pid, 9)
    return len(held) == 4  # all four held 200 MB at once
"""


def memory_cgroups_here() -> Path:
    """The folder where sandbox cgroups are made; skips where this trainer can make none."""
    with memory_group(1 << 30) as group:
        if group is None:
            pytest.skip("this trainer can create no memory cgroup (not root under v1, or v2 without memory delegated)")
    return group.parent


def test_processes_together_cannot_pass_the_sandbox_memory(monkeypatch):
    memory_cgroups_here()
    limits = SandboxLimits(timeout_seconds=30, cpu_seconds=5, memory_bytes=256 << 20)  # a cap of 256 + 64 MiB
    tests = ["assert attack() == True"]
    assert run_tests(textwrap.dedent(HOLDERS), tests, limits, audit_hook=False).fraction == 0.0
    # the attack is real: each process stays inside RLIMIT_AS, so without the cgroup they hold 800 MB
    monkeypatch.setattr(runner, "memory_group", lambda limit: contextlib.nullcontext(None))
    assert run_tests(textwrap.dedent(HOLDERS), tests, limits, audit_hook=False).fraction == 1.0


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_the_cgroup_and_whatever_ran_in_it_are_gone_after_the_call(isolation, tmp_path):
    folder = memory_cgroups_here()
    pid_file = tmp_path / "pid"
    program = f"""
    import os, time
    pid = os.fork()
    if pid == 0:
        os.setsid()  # out of the process group the runner kills
        time.sleep(60)
        os._exit(0)
    try:
        open({str(pid_file)!r}, 'w').write(str(pid))
    except OSError:  # bwrap: the trainer's folders are not there
        pass
    def f(): return 1
    """
    result = run_tests(textwrap.dedent(program), ["assert f() == 1"], LIMITS, isolation=isolation, audit_hook=False)
    assert result.passed == [True]
    assert list(folder.glob("rlxf-sandbox-*")) == []
    if isolation == "process":
        pid = int(pid_file.read_text())
        try:
            assert _state(pid) in ("gone", "Z")
        finally:
            if _state(pid) not in ("gone", "Z"):
                os.kill(pid, 9)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def test_the_memory_cgroup_is_found_under_either_hierarchy(tmp_path, monkeypatch):
    """Parsing only, on folders standing in for /sys/fs/cgroup (a v2 machine is not at hand)."""
    (tmp_path / "v1" / "jobs" / "7").mkdir(parents=True)
    (tmp_path / "v2" / "jobs").mkdir(parents=True)
    v1 = ("/", str(tmp_path / "v1"), "cgroup", {"rw", "memory"})
    v2 = ("/", str(tmp_path / "v2"), "cgroup2", {"rw"})
    monkeypatch.setattr(cgroup, "_own_groups", lambda: {"memory": "/jobs/7", "": "/jobs"})
    monkeypatch.setattr(cgroup, "_mounts", lambda: [v2, v1])
    assert cgroup.find_parent() == cgroup.Parent(tmp_path / "v1" / "jobs" / "7", 1)  # v1's memory first
    monkeypatch.setattr(cgroup, "_mounts", lambda: [v2])
    assert cgroup.find_parent() is None  # v2 whose cgroup does not hand memory to its children
    (tmp_path / "v2" / "jobs" / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert cgroup.find_parent() == cgroup.Parent(tmp_path / "v2" / "jobs", 2)
    (tmp_path / "v2" / "jobs" / "cgroup.subtree_control").write_text("cpu pids\n")
    assert cgroup.find_parent() is None
    assert cgroup._unescape(r"/sys/fs/cgroup/my\040jobs") == "/sys/fs/cgroup/my jobs"

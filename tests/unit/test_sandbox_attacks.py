"""The code sandbox tried as an attacker would: each attack scores 0 and leaves no trace outside.

Every test here runs with the in-process audit hook switched off, so what holds is the
operating system's isolation (bubblewrap) and the parent's verdicts alone.
"""

import base64
import dataclasses
import os
import resource
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

from rlxf.rewards.code import UnitTestReward
from rlxf.rewards.sandbox import SandboxLimits, run_tests
from rlxf.rewards.sandbox.isolation import interpreter_view

LIMITS = SandboxLimits(timeout_seconds=20, cpu_seconds=5, memory_bytes=512 << 20, output_bytes=256 << 10)
REPO = Path(__file__).resolve().parents[2]


def attack(program: str, tests: list[str]) -> float:
    """The share of ``tests`` the program passes in the OS sandbox with no in-process guard."""
    return run_tests(textwrap.dedent(program), tests, LIMITS, audit_hook=False).fraction


def succeeded(program: str) -> float:
    """``program`` defines ``attack()`` returning True when the attack worked; its score."""
    return attack(program, ["assert attack() == True"])


def test_an_honest_program_still_passes():
    assert attack("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == 1.0


def test_the_guard_cannot_be_switched_off_to_run_commands_as_root(tmp_path):
    marker = tmp_path / "ran"
    program = f"""
    import sys
    vars(sys.modules['__main__']).update(_FORBIDDEN=(), _FORBIDDEN_MODULES=(), _PATH_EVENTS=())  # the old guard's lists
    import subprocess
    MARKER = {str(marker)!r}
    def attack():
        subprocess.run([sys.executable, '-c', f'open({{MARKER!r}}, "w").write("x")'], check=True)
        return True
    """
    assert succeeded(program) == 0.0 and not marker.exists()
    # processes it starts are as unprivileged as it is
    who = "import os, subprocess, sys\ndef attack():\n    out = subprocess.run([sys.executable, '-c', 'import os; print(os.getuid())'], capture_output=True, text=True).stdout\n    return os.getuid() == 0 or out.strip() == '0'"
    assert succeeded(who) == 0.0


def test_no_capability_and_no_root(tmp_path):
    program = """
    import os
    def attack():
        caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm'))]
        return os.getuid() == 0 or os.geteuid() == 0 or any(int(l.split()[1], 16) for l in caps)
    """
    assert succeeded(program) == 0.0


@pytest.mark.parametrize("how", ["write", "unlink", "link", "rename"])
def test_dir_fd_cannot_reach_outside(tmp_path, how):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    folder = str(tmp_path)
    actions = {
        "write": "fd = os.open('new.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d); os.write(fd, b'x')",
        "unlink": "os.unlink('keep.txt', dir_fd=d)",
        "link": "os.link('keep.txt', 'copy.txt', src_dir_fd=d, dst_dir_fd=d)",
        "rename": "os.rename('keep.txt', 'gone.txt', src_dir_fd=d, dst_dir_fd=d)",
    }
    program = f"""
    import os
    def attack():
        for path in ({folder!r}, {str(Path(folder).parent)!r}, '/'):
            try:
                d = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                {actions[how]}
                return True
            except OSError:
                pass
        return False
    """
    assert succeeded(program) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"] and keep.read_text() == "precious"


def test_no_fifo_or_device_node_outside_or_in(tmp_path):
    program = f"""
    import os, stat
    def attack():
        made = []
        for path in ({str(tmp_path / "fifo")!r}, 'fifo'):
            try:
                os.mkfifo(path); made.append(path)
            except OSError:
                pass
        for path in ({str(tmp_path / "mem")!r}, 'mem'):
            try:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 1)); made.append(path)  # /dev/mem
            except OSError:
                pass
        return any(p.endswith('mem') for p in made) or any(p.startswith('/') for p in made)
    """
    assert succeeded(program) == 0.0 and list(tmp_path.iterdir()) == []


def test_other_processes_cannot_be_seen_signalled_or_relimited():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = resource.prlimit(victim.pid, resource.RLIMIT_NOFILE)
        for pid in (victim.pid, os.getpid()):
            assert pid > 100  # not a number the sandbox's own few processes could have
            program = f"""
            import os, resource, signal
            def attack():
                reached = os.path.exists('/proc/{pid}')
                for act in (lambda: os.kill({pid}, 0),  # exists (a PermissionError says so too)
                            lambda: os.kill({pid}, signal.SIGKILL),
                            lambda: signal.pidfd_send_signal(os.pidfd_open({pid}), signal.SIGKILL),
                            lambda: resource.prlimit({pid}, resource.RLIMIT_NOFILE, (3, 3))):
                    try:
                        act(); reached = True
                    except PermissionError:
                        reached = True
                    except OSError:  # ProcessLookupError: no such process here
                        pass
                return reached
            """
            # in its own pid namespace, the others do not exist
            assert succeeded(program) == 0.0, pid
        assert victim.poll() is None
        assert resource.prlimit(victim.pid, resource.RLIMIT_NOFILE) == before
    finally:
        victim.kill()
        victim.wait()


def test_the_network_is_unreachable():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    program = f"""
    import socket
    def attack():
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')
            return True
        except OSError:
            return False
    """
    assert succeeded(program) == 0.0
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to compile the extension")
def test_a_compiled_extension_runs_confined(tmp_path):
    marker = tmp_path / "native-ran"
    source = tmp_path / "escape.c"
    source.write_text(
        "#include <Python.h>\n#include <stdio.h>\n"
        'static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "escape", 0, -1, 0};\n'
        f'PyMODINIT_FUNC PyInit_escape(void) {{ FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("x", f); fclose(f); }}\n'
        '  PyObject *mod = PyModule_Create(&m); PyModule_AddIntConstant(mod, "wrote", f != 0); return mod; }\n'
    )
    library = tmp_path / "escape.so"
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(library)], check=True)
    blob = base64.b64encode(library.read_bytes()).decode()
    program = f"""
    import base64, sys
    open('escape.so', 'wb').write(base64.b64decode({blob!r}))
    sys.path.insert(0, '.')
    import escape
    def attack():
        return bool(escape.wrote)
    """
    assert run_tests(textwrap.dedent(program), ["assert attack() == False"], LIMITS, audit_hook=False).fraction == 1.0
    assert succeeded(program) == 0.0 and not marker.exists()  # the native code ran, but inside


def test_nothing_of_the_machine_is_readable(monkeypatch, tmp_path):
    monkeypatch.setenv("RLXF_TEST_SECRET", "s3cr3t-token")
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"answer": 42}\n')
    program = f"""
    import os
    def attack():
        seen = str(dict(os.environ))
        for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
            try:
                seen += open(f'/proc/{{pid}}/environ').read()
            except OSError:
                pass
        if 's3cr3t-token' in seen:
            return True
        for path in ({str(answers)!r}, {str(REPO / "pyproject.toml")!r}, '/etc/passwd', {str(Path(sys.prefix))!r}):
            try:
                open(path).read(1) if os.path.isfile(path) else os.listdir(path)
                return True
            except OSError:
                pass
        return False
    """
    assert succeeded(program) == 0.0
    # everything the sandbox can see is the interpreter, its standard library and shared libraries
    view = interpreter_view()
    allowed = (*view.files, *view.directories)
    program = f"""
    import os
    def strays():
        found = []
        for top, dirs, files in os.walk('/'):
            if top in ('/proc', '/dev', '/tmp'):
                dirs[:] = []
                continue
            found += [p for p in (os.path.join(top, f) for f in files) if not p.startswith({allowed!r})]
        return found
    """
    assert attack(program, ["assert strays() == []"]) == 1.0


FRAME_FORGERY = "the harness's own writer and job, reached through its frame"
FORGERIES = {
    "builtins swap": """
        import builtins
        builtins.exec = builtins.eval = lambda *a, **k: True
        def add(a, b): return 0
    """,
    "test-list rewrite": """
        import sys
        frame = sys._getframe()
        while frame is not None:
            job = frame.f_locals.get('job')
            if isinstance(job, dict):
                for value in job.values():
                    if isinstance(value, list):
                        value[:] = ['True'] * len(value)
            frame = frame.f_back
        def add(a, b): return 0
    """,
    FRAME_FORGERY: """
        import os, sys
        frame = sys._getframe()
        while frame is not None:
            harness = frame.f_locals
            if callable(harness.get('send')) and isinstance(harness.get('job'), dict):
                harness['send']({'ran': True})  # as the harness would, through its own writer
                for index in range(len(harness['job']['candidates'])):
                    harness['send']({'index': index, 'value': True})
                harness['results'].flush()
                os._exit(0)  # before the harness could write the real values
            frame = frame.f_back
        def add(a, b): return 0
    """,
    "always-equal object": """
        class Anything:
            def __eq__(self, other): return True
            __hash__ = object.__hash__
        def add(a, b): return Anything()
    """,
    "int whose equality lies": """
        class Liar(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def add(a, b): return Liar(0)
    """,
    "forged result lines": """
        import json, os
        for fd in range(3, 20):
            for i in range(10):
                try:
                    os.write(fd, (json.dumps({'index': i, 'value': True}) + '\\n').encode())
                except OSError:
                    pass
        def add(a, b): return 0
    """,
    "sys.exit": "import sys\nsys.exit(0)",
    "os._exit": "import os\nos._exit(0)",
    "exit during the test": "import os\ndef add(a, b): os._exit(0)",
}


@pytest.mark.parametrize("name", FORGERIES)
def test_a_program_that_implements_nothing_scores_zero(name):
    tests = ["assert add(1, 2) == 918273645", "assert add(2, 2) == 4", "assert not add(0, 0) == 99"]
    assert attack(FORGERIES[name], tests[:2]) == 0.0
    # the forgery works on its own terms only where an honest value would: 0 != 99
    assert attack(FORGERIES[name], tests[2:]) in (0.0, 1.0)


def test_the_frame_forgery_reaches_the_harness_yet_cannot_supply_an_unknown_value():
    # it does write through the harness's writer: a test that any truthy value passes, passes
    assert attack(FORGERIES[FRAME_FORGERY], ["assert add(0, 0)"]) == 1.0
    assert attack(FORGERIES[FRAME_FORGERY], ["assert add(1, 2) == 918273645", "assert add(2, 2) == 4"]) == 0.0


def test_the_expected_side_never_enters_the_sandbox():
    program = """
    import gc, sys
    def everything():
        frames, frame = [], sys._getframe()
        while frame is not None:
            frames += [repr(frame.f_locals), repr(frame.f_globals)]
            frame = frame.f_back
        return ' '.join(frames + [repr(o) for o in gc.get_objects() if isinstance(o, (dict, list, tuple, str))])
    def add(a, b): return a + b
    def saw_candidate(): return 'add(1, 2)' in everything()
    def saw_expected(): return str(918273000 + 645) in everything()
    """
    tests = ["assert add(1, 2) == 918273645", "assert saw_candidate() == True", "assert saw_expected() == True"]
    result = run_tests(textwrap.dedent(program), tests, LIMITS, audit_hook=False)
    assert result.passed == [False, True, False]


def test_a_thread_left_running_does_not_hold_the_call():
    program = "import threading, time\nthreading.Thread(target=time.sleep, args=(120,)).start()\ndef f(): return 1"
    started = time.monotonic()
    result = run_tests(program, ["assert f() == 1"], LIMITS, audit_hook=False)
    # not a speed target: the call must end when the program does, not at the 20 s timeout
    assert result.passed == [True] and not result.timed_out and time.monotonic() - started < LIMITS.timeout_seconds / 2


def test_a_fork_bomb_stays_inside_its_process_limit():
    program = "import os\nfor _ in range(10_000):\n    os.fork()\ndef f(): return 1"
    result = run_tests(program, ["assert f() == 1"], LIMITS, audit_hook=False)
    assert result.passed == [False] and "BlockingIOError" in (result.error or "")


def test_the_default_reward_uses_the_os_sandbox():
    reward = UnitTestReward(limits=LIMITS)
    batch = reward.score([], ["import os\ndef uid(): return os.getuid()"], tests=[["assert uid() == 0"]])
    assert reward.sandbox == "bwrap" and batch.rewards.tolist() == [0.0] and "sandbox/unisolated" not in batch.metrics()
    with pytest.warns(UserWarning, match="not isolated"):
        unisolated = UnitTestReward(limits=LIMITS, sandbox="process")
    assert unisolated.score([], ["x = 1"], tests=[["assert x == 1"]]).metrics()["sandbox/unisolated"] == 1.0


FORGE_FIRST = """
import os, sys
fd = sys._getframe(1).f_locals['job']['results_fd']
os.write(fd, b'{"ran": true}\\n{"index": 0, "value": 4}\\n')
"""


def test_a_right_value_forged_before_the_harness_writes_is_overwritten_and_a_hang_after_it_fails():
    assert attack(FORGE_FIRST + "def add(a, b): return 5\n", ["assert add(2, 2) == 4"]) == 0.0  # the harness's 5 wins
    hang = SandboxLimits(timeout_seconds=3, cpu_seconds=2)
    result = run_tests(FORGE_FIRST + "while True: pass\n", ["assert add(2, 2) == 4"], hang, audit_hook=False)
    assert result.fraction == 0.0 and (result.timed_out or "died" in result.error)  # the CPU limit kills it


@pytest.mark.parametrize("output_bytes", [1 << 20, LIMITS.results_bytes])
def test_a_forged_value_padded_past_what_the_trainer_reads_fails(output_bytes):
    """Blank lines after the forged ones: past ``results_bytes`` the trainer would read only the
    forgery; at a file-size limit no larger, the harness could write nothing after it."""
    padded = FORGE_FIRST + f"os.write(fd, b'\\n' * {LIMITS.results_bytes})\ndef add(a, b): return 5\n"
    limits = dataclasses.replace(LIMITS, output_bytes=output_bytes)
    result = run_tests(padded, ["assert add(2, 2) == 4"], limits, audit_hook=False)
    why = "results channel" if output_bytes > LIMITS.results_bytes else "died"
    assert result.passed == [False] and why in result.error


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_a_thousand_nested_folders_neither_crash_the_trainer_nor_stay_behind(isolation, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    program = "import os\nfor _ in range(1100):\n    os.mkdir('d'); os.chdir('d')\ndef f(): return 2\n"
    result = run_tests(program, ["assert f() == 2"], LIMITS, isolation=isolation, audit_hook=False)
    assert result.passed == [True] and list(tmp_path.iterdir()) == []


def test_the_sandbox_tmp_is_small_and_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    program = """
    def attack():
        try:
            with open('big', 'wb') as f:
                for _ in range(100):
                    f.write(b'x' * (1 << 20))
        except OSError:
            return False
        return True
    """
    limits = SandboxLimits(timeout_seconds=20, output_bytes=512 << 20, memory_bytes=512 << 20, disk_bytes=8 << 20)
    assert run_tests(textwrap.dedent(program), ["assert attack() == False"], limits, audit_hook=False).fraction == 1.0
    assert list(tmp_path.iterdir()) == []

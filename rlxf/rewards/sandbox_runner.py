"""Runs inside the sandbox process (``python -I rlxf/rewards/sandbox_runner.py``), never imported.

Reads a one-time nonce and the limits from stdin; sets resource limits (and, as root,
moves into an empty network namespace); installs an audit hook that refuses process
creation, networking, native-code loading and writes outside the working directory; runs
the program and then each test; prints ``<nonce> <json results>`` as its last line.
"""

import json
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_FORBIDDEN = (
    "os.fork",
    "os.forkpty",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "subprocess.Popen",
    "os.kill",
    "os.killpg",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.cdata",
    "socket.__new__",
    "socket.connect",
    "socket.bind",
    "socket.getaddrinfo",
    "os.setuid",
    "os.chroot",
    "sys.addaudithook",
)
_FORBIDDEN_MODULES = ("_posixsubprocess", "_ctypes", "ctypes", "multiprocessing", "_multiprocessing", "pty")
_PATH_EVENTS = (
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
)


def _install_guard(root):
    def inside(path):
        if isinstance(path, int):
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    def guard(event, args):
        if event.startswith(_FORBIDDEN):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in _FORBIDDEN_MODULES:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing outside the sandbox ({path})")
        elif event in _PATH_EVENTS and args and not all(inside(a) for a in args if isinstance(a, (str, bytes))):
            raise PermissionError(f"sandbox: {event} outside the sandbox")

    sys.addaudithook(guard)


def _run(job, nonce):
    namespace = {"__name__": "__main__"}
    results = {"program": None, "tests": []}
    try:
        exec(compile(job["program"], "program.py", "exec"), namespace)
    except BaseException as error:  # noqa: BLE001 - the program's failure is the result
        results["program"] = f"{type(error).__name__}: {error}"[:500]
    for test in job["tests"]:
        if results["program"] is not None:
            results["tests"].append(False)
            continue
        try:
            exec(compile(test, "test.py", "exec"), namespace)
            results["tests"].append(True)
        except BaseException:  # noqa: BLE001
            results["tests"].append(False)
    sys.stdout.flush()
    sys.stdout.write(f"\n{nonce} {json.dumps(results)}\n")
    sys.stdout.flush()


def _confine(limits):
    import resource

    for name, value in (
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_FSIZE", limits["output_bytes"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    if os.geteuid() == 0:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET: no interfaces
        except (OSError, AttributeError):
            pass
    else:  # root ignores the process-count limit; the audit hook stops forks either way
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))


def main():
    nonce = sys.stdin.readline().strip()
    _confine(json.loads(sys.stdin.readline()))
    job = json.loads(sys.stdin.readline())
    _install_guard(os.path.realpath(os.getcwd()))
    _run(job, nonce)


main()

"""Runs inside the sandbox (``python -I -S -c <this file's text>``); never imported by rlxf.

Reads one job as JSON from stdin, sets the resource limits, gives up root for the job's uid
where it was started as root, optionally installs the audit hook (a second, in-process layer
that the OS isolation does not depend on), runs the program, then evaluates each candidate
expression and writes its value as tagged JSON, one line each, to the results descriptor.
It decides nothing: the parent compares the values with the tests' expected sides.
"""

import base64
import json
import os
import sys


def encode(value, depth=0):
    """Plain data as tagged JSON; anything else is an error (so a custom ``__eq__`` never travels)."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    if value is None:
        return None
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    for kind, tag in ((list, "list"), (tuple, "tuple"), (set, "set"), (frozenset, "frozenset")):
        if isinstance(value, kind):
            return {tag: [encode(item, depth + 1) for item in value]}
    raise TypeError(f"a test value must be plain data, not {type(value).__name__}")


def confine(limits, uid):
    import resource

    for name, value in (
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_FSIZE", limits["output_bytes"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
        ("RLIMIT_NPROC", limits["nproc"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    if uid is not None:  # started as root by bubblewrap, with only CAP_SETUID and CAP_SETGID left
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # drops those two as well


def install_audit_hook(root):
    """Refuses process creation, signals, networking, native code and writes outside ``root``.

    Every name the hook reads is bound in this closure, not in a global a program could reach
    through ``sys.modules``; still, audit hooks are not a security boundary (PEP 578)."""
    forbidden = (
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "subprocess.Popen",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "resource.prlimit",
        "ctypes.",
        "socket.",
        "os.setuid",
        "os.chroot",
        "sys.addaudithook",
        "os.mkfifo",
        "os.mknod",
        "os.startfile",
    )
    modules = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "multiprocessing", "_multiprocessing", "pty", "gc"})
    # path events and how many trailing dir_fd arguments each carries
    paths = {
        "os.remove": 1,
        "os.rmdir": 1,
        "os.mkdir": 1,
        "os.chmod": 1,
        "os.chown": 1,
        "os.utime": 1,
        "os.symlink": 1,
        "os.rename": 2,
        "os.link": 2,
        "os.truncate": 0,
        "shutil.rmtree": 0,
        "shutil.move": 0,
        "shutil.copyfile": 0,
    }.get
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    realpath, fsdecode, sep, startswith = os.path.realpath, os.fsdecode, os.sep, str.startswith

    def inside(path):
        real = realpath(fsdecode(path))
        return real == root or startswith(real, root + sep)

    def guard(event, args):
        if startswith(event, forbidden):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].partition(".")[0] in modules:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and (isinstance(path, int) or not inside(path)):
                raise PermissionError(f"sandbox: writing outside the sandbox ({path})")
        elif (dir_fds := paths(event)) is not None:
            if any(fd not in (None, -1) for fd in args[len(args) - dir_fds :]):  # a dir_fd may point anywhere
                raise PermissionError(f"sandbox: {event} with dir_fd is not allowed")
            if not all(inside(a) for a in args if isinstance(a, (str, bytes))):
                raise PermissionError(f"sandbox: {event} outside the sandbox")

    sys.addaudithook(guard)


def run(job, results):
    def send(message):
        results.write(json.dumps(message) + "\n")
        results.flush()

    namespace = {"__name__": "__main__"}
    try:
        exec(compile(job["program"], "program.py", "exec"), namespace)  # noqa: S102 - the sandboxed program
    except BaseException as error:  # noqa: BLE001 - the program's failure is the result
        send({"program_error": f"{type(error).__name__}: {error}"[:500]})
        return
    send({"ran": True})
    for index, expression in enumerate(job["candidates"]):
        try:
            send({"index": index, "value": encode(eval(expression, namespace))})
        except BaseException as error:  # noqa: BLE001
            send({"index": index, "error": f"{type(error).__name__}: {error}"[:200]})


def main():
    job = json.loads(sys.stdin.readline())
    results = os.fdopen(job["results_fd"], "w", encoding="utf-8")
    confine(job["limits"], job["uid"])
    if job["audit_hook"]:
        install_audit_hook(os.path.realpath(os.getcwd()))
    status = 1  # a harness that could not write every result (a full file, a closed descriptor) fails
    try:
        run(job, results)
        status = 0
    finally:
        try:
            sys.stdout.flush()
        finally:
            os._exit(status)  # threads the program left running do not hold the sandbox open


main()

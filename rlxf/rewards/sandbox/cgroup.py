"""A memory cgroup of its own for each sandbox, where the trainer may create one.

``RLIMIT_AS`` bounds one process's address space: a program of 16 processes holds 16 times
``memory_bytes``, and memory outside every address space (System V shared memory, the ``/tmp``
tmpfs, pipes) escapes it altogether. A cgroup counts all of it, across every process of the
sandbox. Under cgroup v1 the group is a child of this process's ``memory`` cgroup (root may
create one there); under v2, of its unified cgroup where that cgroup already delegates the
memory controller to its children. Elsewhere `memory_group` yields None and the sandbox keeps
the per-process limits alone (docs/security.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ENTER = 'echo $$ > "$0" && exec "$@"'  # the shell joins the group, then becomes the command
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parent:
    """Where sandbox groups are made: a memory cgroup folder and its hierarchy's version (1 or 2)."""

    path: Path
    version: int


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, file system type, super options) of every mount of this process."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, kind = before.split(), after.split()
        if len(fields) >= 5 and len(kind) >= 3:
            mounts.append((_unescape(fields[3]), _unescape(fields[4]), kind[0], set(kind[2].split(","))))
    return mounts


def _unescape(path: str) -> str:
    """A mountinfo path as it is (the kernel writes a space as ``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


def _own_groups() -> dict[str, str]:
    """This process's cgroup path by controller (``""`` for the v2 unified hierarchy)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _under(mount_root: str, mount_point: str, path: str) -> Path | None:
    """The folder of cgroup ``path`` below a mount of the hierarchy at ``mount_root``; None when
    the mount does not show it."""
    relative = os.path.relpath(path, mount_root)
    return None if relative.startswith("..") else Path(mount_point, relative)


def find_parent() -> Parent | None:
    """This process's memory cgroup, where children with a memory limit can be made; None where
    there is none (no memory controller, or v2 without memory delegated to children)."""
    try:
        groups, mounts = _own_groups(), _mounts()
    except (OSError, ValueError):
        return None
    for root, point, kind, options in mounts:
        if kind == "cgroup" and "memory" in options and "memory" in groups:
            if (folder := _under(root, point, groups["memory"])) is not None and folder.is_dir():
                return Parent(folder, 1)
    for root, point, kind, _ in mounts:
        if kind == "cgroup2" and "" in groups and (folder := _under(root, point, groups[""])) is not None:
            with contextlib.suppress(OSError):
                if "memory" in (folder / "cgroup.subtree_control").read_text().split():
                    return Parent(folder, 2)
    return None


def _limit_files(version: int, limit_bytes: int) -> list[tuple[str, int, bool]]:
    """(file, value, required) to write, in order. v1's memory+swap limit may not fall below the
    memory limit and exists only where swap is accounted; v2's swap limit of 0 (absent without
    swap) keeps the group out of swap."""
    if version == 2:
        return [("memory.max", limit_bytes, True), ("memory.swap.max", 0, False)]
    return [("memory.limit_in_bytes", limit_bytes, True), ("memory.memsw.limit_in_bytes", limit_bytes, False)]


def _make(parent: Parent, limit_bytes: int) -> Path | None:
    """A new child group of ``parent`` holding at most ``limit_bytes``; None where it cannot be made."""
    group = parent.path / f"rlxf-sandbox-{secrets.token_hex(8)}"
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        for name, value, required in _limit_files(parent.version, limit_bytes):
            if required or (group / name).exists():
                (group / name).write_text(str(value))
    except OSError:
        remove(group)
        return None
    return group


def remove(group: Path, attempts: int = 100) -> None:
    """Kills every process left in ``group``, then removes it (a group with processes cannot go)."""
    for _ in range(attempts):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            _kill_members(group)
            time.sleep(0.01)
    log.warning("could not remove the sandbox's cgroup %s: a process in it outlived SIGKILL", group)


def _kill_members(group: Path) -> None:
    if (group / "cgroup.kill").exists():  # v2 since Linux 5.14: no pid can be reused in between
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")
        return
    with contextlib.suppress(OSError):  # v1: by pid (one could exit and be reused before the kill: a narrow race)
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def memory_group(limit_bytes: int) -> Iterator[Path | None]:
    """A fresh memory cgroup of ``limit_bytes`` for one sandbox (None where none can be made),
    emptied and removed on the way out, whatever the sandbox left running in it."""
    parent = find_parent()
    group = _make(parent, limit_bytes) if parent is not None else None
    try:
        yield group
    finally:
        if group is not None:
            remove(group)


def in_group(group: Path | None, command: list[str]) -> list[str]:
    """``command`` started inside ``group``: a shell writes its own pid into the group, then
    becomes the command, so everything it starts is counted there from its first instruction
    (no ``preexec_fn``: the trainer has threads)."""
    if group is None:
        return command
    return ["/bin/sh", "-c", _ENTER, str(group / "cgroup.procs"), *command]

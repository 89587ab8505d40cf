"""A seccomp filter for the sandbox, handed to bubblewrap (``--seccomp FD``) as a compiled
classic-BPF program, so the kernel refuses what no unit test needs and would widen the attack:

- new user namespaces (``unshare``/``clone`` with CLONE_NEWUSER; ``clone3``, whose flags a filter
  cannot read, answers ENOSYS, and the C library falls back to ``clone``): inside one, a program
  would hold every capability over namespaces of its own, and every kernel bug they reach;
- ``setns``, ``bpf``, ``perf_event_open``, ``userfaultfd``, the kernel keyring, ``ptrace``,
  ``process_vm_readv``/``writev``, ``pidfd_getfd`` and io_uring (whose operations no seccomp
  filter sees);
- System V shared memory, semaphores and message queues (``shmget``, ``semget``, ``msgget``): a
  segment made and detached holds memory outside every address space, past ``RLIMIT_AS``;
- sockets of any family but AF_UNIX, AF_INET and AF_INET6 (``socket``/``socketpair`` answer
  EAFNOSUPPORT): the network namespace confines those three, while AF_VSOCK ignores it (it
  reaches the host of a VM) and AF_NETLINK, AF_PACKET and the rest only widen what the kernel
  exposes;
- every system call of another ABI (i386 via ``int 0x80``, x32), which would dodge the numbers
  above.

Everything else is allowed: the namespaces, the read-only root and the limits do the rest.
"""

from __future__ import annotations

import errno
import platform
import struct

# classic BPF opcodes (linux/filter.h)
_LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_AT_LEAST = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JUMP_ANY_BIT = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K

# linux/seccomp.h
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

_SYSCALL_NUMBER, _ARCHITECTURE, _FIRST_ARGUMENT = 0, 4, 16  # offsets in struct seccomp_data
CLONE_NEWUSER = 0x10000000
SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}  # the families a socket may have
_X32_BIT = 0x40000000

# machine: (AUDIT_ARCH, syscalls that check the flags, that check the family, refused, clone3)
_TABLES = {
    "x86_64": (
        0xC000003E,
        {"clone": 56, "unshare": 272},
        {"socket": 41, "socketpair": 53},
        {"shmget": 29, "semget": 64, "msgget": 68, "setns": 308, "bpf": 321, "perf_event_open": 298,
         "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249, "ptrace": 101,
         "process_vm_readv": 310, "process_vm_writev": 311,
         "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438},
        435,
    ),
    "aarch64": (
        0xC00000B7,
        {"clone": 220, "unshare": 97},
        {"socket": 198, "socketpair": 199},
        {"shmget": 194, "semget": 190, "msgget": 186, "setns": 268, "bpf": 280, "perf_event_open": 241,
         "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218, "ptrace": 117,
         "process_vm_readv": 270, "process_vm_writev": 271,
         "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438},
        435,
    ),
}  # fmt: skip


def syscall_numbers(machine: str) -> dict[str, int]:
    """Every system call the filter names on ``machine``, by name."""
    _, flag_checked, family_checked, refused, clone3 = _TABLES[machine]
    return {**flag_checked, **family_checked, **refused, "clone3": clone3}


def supported() -> bool:
    """Whether this machine has a table (x86_64 or aarch64)."""
    return platform.machine() in _TABLES


def _instruction(code: int, jump_true: int = 0, jump_false: int = 0, value: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, value)


def sandbox_filter(machine: str | None = None) -> bytes:
    """The compiled filter for ``machine`` (this one by default). Jumps count the instructions
    they skip."""
    machine = machine or platform.machine()
    if machine not in _TABLES:
        raise ValueError(f"no seccomp table for {machine}")
    architecture, flag_checked, family_checked, refused, clone3 = _TABLES[machine]
    refuse = _ERRNO | errno.EPERM
    code = [
        _instruction(_LOAD_WORD, value=_ARCHITECTURE),
        _instruction(_JUMP_EQUAL, 1, 0, architecture),
        _instruction(_RETURN, value=refuse),  # another ABI
        _instruction(_LOAD_WORD, value=_SYSCALL_NUMBER),
        _instruction(_JUMP_AT_LEAST, 0, 1, _X32_BIT),
        _instruction(_RETURN, value=refuse),  # x32
    ]
    verdicts = [(number, refuse) for number in refused.values()] + [(clone3, _ERRNO | errno.ENOSYS)]
    for number, verdict in verdicts:
        code += [_instruction(_JUMP_EQUAL, 0, 1, number), _instruction(_RETURN, value=verdict)]
    flags, families = _flags_check(refuse), _family_check()
    targets = [(n, 0) for n in flag_checked.values()] + [(n, len(flags)) for n in family_checked.values()]
    for index, (number, block) in enumerate(targets):  # past the other jumps and the allow, into the block
        code.append(_instruction(_JUMP_EQUAL, len(targets) - index + block, 0, number))
    return b"".join([*code, _instruction(_RETURN, value=_ALLOW), *flags, *families])


def _flags_check(refuse: int) -> list[bytes]:
    """Refuses a ``clone``/``unshare`` whose flags (their low 32 bits, little-endian) ask for
    CLONE_NEWUSER."""
    return [
        _instruction(_LOAD_WORD, value=_FIRST_ARGUMENT),
        _instruction(_JUMP_ANY_BIT, 0, 1, CLONE_NEWUSER),
        _instruction(_RETURN, value=refuse),
        _instruction(_RETURN, value=_ALLOW),
    ]


def _family_check() -> list[bytes]:
    """Allows a ``socket``/``socketpair`` of the families in `SOCKET_FAMILIES` (an ``int``, the
    argument's low 32 bits), answers EAFNOSUPPORT to any other."""
    families = list(SOCKET_FAMILIES.values())
    code = [_instruction(_LOAD_WORD, value=_FIRST_ARGUMENT)]
    for index, family in enumerate(families):  # past the other families and the refusal
        code.append(_instruction(_JUMP_EQUAL, len(families) - index, 0, family))
    return code + [_instruction(_RETURN, value=_ERRNO | errno.EAFNOSUPPORT), _instruction(_RETURN, value=_ALLOW)]

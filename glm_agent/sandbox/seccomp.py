"""The seccomp filter bubblewrap installs in every sandbox (`bwrap --seccomp FD`).

A classic-BPF program, built here with struct.pack, that refuses a few system calls and
allows everything else:

- `fallocate`, and the ioctls that do the same (`FS_IOC_RESVSP`, `FS_IOC_RESVSP64`,
  `FS_IOC_ZERO_RANGE`, in their 64- and 32-bit layouts), fail with EOPNOTSUPP. They reserve
  disk blocks without writing them, at about 13 GB/s, and a call in progress completes even
  after its process is killed, so the workspace quota watcher (quota.py) cannot stop them.
  glibc's `posix_fallocate` (Python's `os.posix_fallocate`) then falls back to writing, which
  the watcher sees and stops.
- `io_uring_setup`, `io_uring_enter`, `io_uring_register` fail with ENOSYS: operations
  submitted through a ring (IORING_OP_FALLOCATE ...) run without any system call that this
  filter could see, and io_uring has a long record of kernel exploits.
- `keyctl`, `add_key`, `request_key` (ENOSYS): kernel keyrings are not isolated by the
  sandbox's namespaces and their quota is the host user's.
- `bpf`, `userfaultfd`, `perf_event_open` (ENOSYS): no use to data-science code; unprivileged
  eBPF and perf events are common kernel attack surface, userfaultfd is the usual tool to
  widen kernel race windows.

ENOSYS ("not implemented") is what programs already handle as "this kernel lacks it".
`ptrace` stays allowed (debuggers; the sandbox has its own PID namespace, and since Linux 4.8
the filter is checked again after a tracer changes a call). Calls that need a capability
(mount, kexec, module loading ...) are not listed: nothing in the sandbox holds one.

The program checks `seccomp_data.arch`: it covers x86_64 (with the i386 ABI, reachable from
64-bit code through `int 0x80`, and the x32 ABI, whose calls all fail with ENOSYS) and
aarch64 (with 32-bit ARM). Any other architecture gets no filter (`program()` returns None),
nor does a bubblewrap that cannot load one (bwrap.py checks once); `Sandbox.describe()` and
`glm-agent sandbox check` say so.
"""

from __future__ import annotations

import errno
import platform
import struct

__all__ = [
    "program",
    "host_arch",
    "supported",
    "syscall_numbers",
    "REFUSED",
    "RESERVING_IOCTLS",
    "ALLOW",
    "errno_action",
]

# <linux/seccomp.h>
ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000

# <linux/filter.h> classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_NR, _ARCH = 0, 4
_ARG1_LOW = 16 + 8  # ioctl's `unsigned int cmd`: the kernel reads only the low 32 bits
# (every architecture here is little-endian, so they come first)

_X32_BIT = 0x40000000

# <linux/audit.h>: EM_* | __AUDIT_ARCH_64BIT (0x80000000) | __AUDIT_ARCH_LE (0x40000000)
_AUDIT_X86_64 = 0xC000003E
_AUDIT_I386 = 0x40000003
_AUDIT_AARCH64 = 0xC00000B7
_AUDIT_ARM = 0x40000028


def errno_action(err: int) -> int:
    return _RET_ERRNO | err


_EOPNOTSUPP = errno_action(errno.EOPNOTSUPP)
_ENOSYS = errno_action(errno.ENOSYS)

# What is refused, and how (the reason for each is in the module docstring).
REFUSED: dict[str, int] = {
    "fallocate": errno.EOPNOTSUPP,
    "io_uring_setup": errno.ENOSYS,
    "io_uring_enter": errno.ENOSYS,
    "io_uring_register": errno.ENOSYS,
    "keyctl": errno.ENOSYS,
    "add_key": errno.ENOSYS,
    "request_key": errno.ENOSYS,
    "bpf": errno.ENOSYS,
    "userfaultfd": errno.ENOSYS,
    "perf_event_open": errno.ENOSYS,
}


def _iow(kind: str, nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (ord(kind) << 8) | nr


# FS_IOC_RESVSP, FS_IOC_RESVSP64, FS_IOC_ZERO_RANGE (<linux/falloc.h>): fallocate through
# ioctl, on any file system. struct space_resv is 48 bytes, 44 in the i386 layout.
RESERVING_IOCTLS: tuple[int, ...] = tuple(_iow("X", nr, size) for nr in (40, 42, 57) for size in (48, 44))

# System call numbers per ABI (asm/unistd_64.h, unistd_32.h, asm-generic/unistd.h, and
# arch/arm/tools/syscall.tbl).
_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"ioctl": 16, "fallocate": 285, "io_uring_setup": 425, "io_uring_enter": 426,
               "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
               "userfaultfd": 323, "perf_event_open": 298},
    "i386": {"ioctl": 54, "fallocate": 324, "io_uring_setup": 425, "io_uring_enter": 426,
             "io_uring_register": 427, "keyctl": 288, "add_key": 286, "request_key": 287, "bpf": 357,
             "userfaultfd": 374, "perf_event_open": 336},
    "aarch64": {"ioctl": 29, "fallocate": 47, "io_uring_setup": 425, "io_uring_enter": 426,
                "io_uring_register": 427, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
                "userfaultfd": 282, "perf_event_open": 241},
    "arm": {"ioctl": 54, "fallocate": 352, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "keyctl": 311, "add_key": 309, "request_key": 310, "bpf": 386,
            "userfaultfd": 388, "perf_event_open": 364},
}

# Host machine -> the ABIs its processes can use: (name, AUDIT_ARCH value, has the x32 bit).
_HOSTS: dict[str, tuple[tuple[str, int, bool], ...]] = {
    "x86_64": (("x86_64", _AUDIT_X86_64, True), ("i386", _AUDIT_I386, False)),
    "aarch64": (("aarch64", _AUDIT_AARCH64, False), ("arm", _AUDIT_ARM, False)),
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ALIASES.get(machine, machine)


def supported(arch: str | None = None) -> bool:
    """Whether there is a filter for this CPU architecture (default: the host's)."""
    return (arch or host_arch()) in _HOSTS


def syscall_numbers(abi: str | None = None) -> dict[str, int]:
    """Numbers of the filtered calls in an ABI (default: the host's native one)."""
    return dict(_NUMBERS[abi or host_arch()])


class _Asm:
    """Classic BPF with forward jumps to labels (offsets fit in a byte: the program is small)."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def emit(self, op: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.code.append((op, jt, jf, k))

    def bytes(self) -> bytes:
        out = []
        for pc, (op, jt, jf, k) in enumerate(self.code):
            out.append(struct.pack("=HBBI", op, self._offset(pc, jt), self._offset(pc, jf), k))
        return b"".join(out)

    def _offset(self, pc: int, target: object) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[str(target)] - pc - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp program: jump to {target} out of range")
        return offset


def _abi_section(asm: _Asm, name: str, x32: bool) -> None:
    numbers = _NUMBERS[name]
    asm.label(name)
    asm.emit(_LD_W_ABS, _NR)
    if x32:  # x32 calls have bit 30 set; nothing here uses that ABI
        asm.emit(_JGE_K, _X32_BIT, "enosys", 0)
    asm.emit(_JEQ_K, numbers["ioctl"], f"{name}-ioctl", 0)
    for call, err in REFUSED.items():
        asm.emit(_JEQ_K, numbers[call], "eopnotsupp" if err == errno.EOPNOTSUPP else "enosys", 0)
    asm.emit(_RET_K, ALLOW)
    asm.label(f"{name}-ioctl")
    asm.emit(_LD_W_ABS, _ARG1_LOW)
    for cmd in RESERVING_IOCTLS:
        asm.emit(_JEQ_K, cmd, "eopnotsupp", 0)
    asm.emit(_RET_K, ALLOW)


def program(arch: str | None = None) -> bytes | None:
    """The filter for a host architecture (default: this one), as bubblewrap reads it (an
    array of struct sock_filter); None where there is none."""
    abis = _HOSTS.get(arch or host_arch())
    if abis is None:
        return None
    asm = _Asm()
    asm.emit(_LD_W_ABS, _ARCH)
    for name, audit, _ in abis:
        asm.emit(_JEQ_K, audit, name, 0)
    # No other ABI exists on this host; should one appear, refuse rather than let it pass.
    asm.emit(_RET_K, _ENOSYS)
    for name, _, x32 in abis:
        _abi_section(asm, name, x32)
    asm.label("eopnotsupp")
    asm.emit(_RET_K, _EOPNOTSUPP)
    asm.label("enosys")
    asm.emit(_RET_K, _ENOSYS)
    return asm.bytes()

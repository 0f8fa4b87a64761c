"""Attack: reserve disk blocks without writing them, past the workspace quota.

`fallocate` reserves blocks at ~13 GB/s and a call in progress completes even after its
process is killed, so the quota watcher (which stops writers) cannot bound it; with
FALLOC_FL_KEEP_SIZE not even RLIMIT_FSIZE does. The sandbox's seccomp filter refuses every
way to it: fallocate(2) in any mode, the FS_IOC_RESVSP/RESVSP64/ZERO_RANGE ioctls, the i386
ABI reached from 64-bit code with `int 0x80`, x32, and io_uring (whose operations bypass
system-call filters). glibc's posix_fallocate then falls back to writing, which the watcher
stops. Tried from the shell tool, the python tool (threads and processes), `sandbox check`
and as an unprivileged user. The filter also refuses keyrings, bpf, userfaultfd and perf
events; the program itself is checked here by running it on synthetic system calls of
every ABI it covers.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import struct
from pathlib import Path

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.sandbox import Sandbox, SandboxConfig, bwrap_available
from glm_agent.sandbox.quota import measure

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="int 0x80 is x86 only")
MiB = 1024 * 1024
QUOTA_MB = 20
CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=30, workspace_quota_mb=QUOTA_MB)
BOUND = 3 * QUOTA_MB * MiB  # what tests/security/test_quota.py allows writers to overshoot to


# -- the program, on synthetic system calls -----------------------------------------------------

ALLOW, ERRNO = 0x7FFF0000, 0x00050000
AUDIT = {"x86_64": 0xC000003E, "i386": 0x40000003, "aarch64": 0xC00000B7, "arm": 0x40000028}


def run_bpf(prog: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """A classic-BPF interpreter for what a seccomp filter may use (loads, jumps, returns)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x15:  # jeq
            pc += jt if acc == k else jf
        elif code == 0x35:  # jge
            pc += jt if acc >= k else jf
        elif code == 0x06:  # ret
            return k
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")


def test_filter_program_on_every_abi():
    from glm_agent.sandbox import seccomp

    x86 = seccomp.program("x86_64")
    resvsp64, resvsp_32 = 0x40305800 | 42, 0x402C5800 | 40
    eop, enosys = ERRNO | errno.EOPNOTSUPP, ERRNO | errno.ENOSYS
    cases = [
        ("x86_64", 285, (), eop),  # fallocate
        ("x86_64", 0, (), ALLOW),  # read
        ("x86_64", 1, (), ALLOW),  # write
        ("x86_64", 101, (), ALLOW),  # ptrace
        ("x86_64", 250, (), enosys),  # keyctl
        ("x86_64", 425, (), enosys),  # io_uring_setup
        ("x86_64", 323, (), enosys),  # userfaultfd
        ("x86_64", 16, (3, resvsp64), eop),
        ("x86_64", 16, (3, resvsp64 | 0xFFFF_0000_0000_0000), eop),  # the kernel reads 32 bits of cmd
        ("x86_64", 16, (3, 0x5401), ALLOW),  # TCGETS
        ("x86_64", 0x40000000 | 285, (), enosys),  # x32 fallocate
        ("x86_64", 0x40000000 | 0, (), enosys),  # x32 read: no x32 at all
        ("i386", 324, (), eop),
        ("i386", 54, (3, resvsp_32), eop),
        ("i386", 3, (), ALLOW),
        ("i386", 288, (), enosys),
        (0x4000003E, 285, (), enosys),  # an ABI that cannot exist here: refused, not allowed
    ]
    for arch, nr, args, want in cases:
        audit = AUDIT[arch] if isinstance(arch, str) else arch
        assert run_bpf(x86, nr, audit, args) == want, (arch, nr, args)
    arm = seccomp.program("aarch64")
    for arch, nr, args, want in [("aarch64", 47, (), eop), ("aarch64", 64, (), ALLOW), ("aarch64", 219, (), enosys),
                                 ("aarch64", 29, (3, resvsp64), eop), ("arm", 352, (), eop), ("arm", 4, (), ALLOW),
                                 ("arm", 54, (3, resvsp_32), eop), ("x86_64", 285, (), enosys)]:
        assert run_bpf(arm, nr, AUDIT[arch], args) == want, (arch, nr, args)
    assert seccomp.program("riscv64") is None and not seccomp.supported("riscv64")


@pytest.mark.parametrize("abi, header", [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    ("i386", "/usr/include/x86_64-linux-gnu/asm/unistd_32.h"),
    ("aarch64", "/usr/include/asm-generic/unistd.h"),
])
def test_syscall_numbers_match_the_kernel_headers(abi, header):
    from glm_agent.sandbox import seccomp

    if not os.path.exists(header):
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    text = Path(header).read_text()
    for name, nr in seccomp.syscall_numbers(abi).items():
        found = re.search(rf"#define __NR(?:3264)?_{name}\s+(\d+)", text)
        assert found and int(found.group(1)) == nr, (abi, name, nr)


# -- in the sandbox -----------------------------------------------------------------------------

def ctx(ws: Path) -> ToolContext:
    return ToolContext(session_id="seccomp", workspace=ws)


@pytest.fixture
def tool_config() -> SandboxConfig:
    return CFG


# Each prints the errno name it got (or "OK"); 100 MiB each, 5x the quota.
RESERVE = r"""
import ctypes, errno, fcntl, mmap, os, struct
libc = ctypes.CDLL(None, use_errno=True)
size = 100 << 20
def report(label, fn):
    fd = os.open(label, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        rc = fn(fd)
        err = ctypes.get_errno() if rc not in (0, None) else 0
    except OSError as e:
        err = e.errno
    finally:
        os.close(fd)
    print(label, ('EOPNOTSUPP' if err == errno.EOPNOTSUPP else errno.errorcode.get(err, '?')) if err else 'OK')
libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
report('fallocate', lambda fd: libc.fallocate64(fd, 0, 0, size))
report('keep_size', lambda fd: libc.fallocate64(fd, 1, 0, size))  # FALLOC_FL_KEEP_SIZE: past RLIMIT_FSIZE
report('zero_range', lambda fd: libc.fallocate64(fd, 0x10, 0, size))
resv = struct.pack('hhxxxxqqiI16x', 0, 0, 0, size, 0, 0)
report('resvsp64', lambda fd: fcntl.ioctl(fd, 0x40305800 | 42, resv))
report('resvsp', lambda fd: fcntl.ioctl(fd, 0x40305800 | 40, resv))
report('ioctl_zero_range', lambda fd: fcntl.ioctl(fd, 0x40305800 | 57, resv))
if os.uname().machine == 'x86_64':
    # fallocate(fd, KEEP_SIZE, 0, size) through the i386 ABI: int 0x80 from 64-bit code.
    code = bytes.fromhex('5355' '89fb' '89f7' '31ed' '31f6' '31d2' 'b901000000' 'b844010000' 'cd80' '5d5b' 'c3')
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    int80 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    def i386(fd):
        rc = int80(fd, size)
        if rc < 0:
            raise OSError(-rc, 'int 0x80')
    report('i386', i386)
"""
RESERVE_LABELS = ["fallocate", "keep_size", "zero_range", "resvsp64", "resvsp", "ioctl_zero_range"] + (
    ["i386"] if platform.machine() == "x86_64" else [])


def assert_nothing_reserved(output: str, ws: Path) -> None:
    got = dict(line.split() for line in output.splitlines() if line.split()[:1] and line.split()[0] in RESERVE_LABELS)
    assert got == {label: "EOPNOTSUPP" for label in RESERVE_LABELS}, output
    assert measure(ws).bytes < MiB, f"{measure(ws).bytes / MiB:.0f} MiB reserved"


@needs_bwrap
async def test_every_way_to_reserve_blocks_is_refused_in_the_python_tool(python, ws):
    r = await python(RESERVE)
    assert_nothing_reserved(r.content, ws)


@needs_bwrap
async def test_every_way_to_reserve_blocks_is_refused_in_the_shell_tool(shell, ws):
    import shlex

    r = await shell(f"python3 -c {shlex.quote(RESERVE)}; ls /proc/self/fd | tr '\\n' ' '")
    assert_nothing_reserved(r.content, ws)
    # The filter's file descriptor does not stay open in the sandbox (0-2, and ls's own).
    assert r.content.splitlines()[-1].split() == ["0", "1", "2", "3"], r.content


@needs_bwrap
@pytest.mark.parametrize("how", ["fallocate", "fallocate --keep-size", "fallocate --zero-range", "posix"])
async def test_parallel_fallocate_in_the_shell_stays_within_the_bound(shell, ws, how):
    """16 at once: each would reserve 19 MiB (under the per-file limit, 300 MiB in all), or,
    keeping the size, 200 MiB each (no file-size limit applies)."""
    command = {
        "fallocate": "fallocate -l 19M f$i",
        "fallocate --keep-size": "touch f$i; fallocate --keep-size -l 200M f$i",
        "fallocate --zero-range": "touch f$i; fallocate --zero-range -l 19M f$i",
        "posix": "fallocate --posix -l 19M f$i",  # glibc's fallback writes: the watcher stops them
    }[how]
    r = await shell(f"for i in $(seq 1 16); do ({command}) & done; wait")
    assert measure(ws).bytes < BOUND, f"{how}: {measure(ws).bytes / MiB:.0f} MiB, {r.content[:300]}"
    if how == "posix":
        assert r.data["quota_exceeded"], r.content
    else:
        assert re.search(r"(not supported|unsupported)", r.content) and not r.data["quota_exceeded"], r.content


@needs_bwrap
@pytest.mark.parametrize("workers", ["threads", "processes"])
async def test_parallel_posix_fallocate_in_python_stays_within_the_bound(python, ws, workers):
    r = await python(
        "import os, threading, multiprocessing\n"
        f"mod = threading if {workers == 'threads'} else multiprocessing\n"
        "start = mod.Barrier(16)\n"  # all at once: the watcher cannot stop them one by one
        "def fill(i):\n"
        "    fd = os.open(f'p{i}', os.O_WRONLY | os.O_CREAT)\n"
        "    start.wait()\n"
        "    os.posix_fallocate(fd, 0, 19 << 20)\n"
        "kind = mod.Thread if mod is threading else mod.Process\n"
        "ws = [kind(target=fill, args=(i,)) for i in range(16)]\n"
        "[w.start() for w in ws]; [w.join() for w in ws]")
    assert r.data["status"] == "quota", r.content
    # Threads go on writing after the interrupt until the kernel is killed (as in
    # test_quota.py's threads): more room than for processes, far below the 300 MiB reserved
    # at once without the filter.
    bound = BOUND if workers == "processes" else 6 * QUOTA_MB * MiB
    assert measure(ws).bytes < bound, f"{measure(ws).bytes / MiB:.0f} MiB"


@needs_bwrap
async def test_other_refused_calls(python):
    from glm_agent.sandbox import seccomp

    nrs = seccomp.syscall_numbers()
    r = await python(
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"for name, nr in {[(n, nrs[n]) for n in ('io_uring_setup', 'keyctl', 'add_key', 'userfaultfd', 'bpf', 'perf_event_open')]!r}:\n"
        "    buf = ctypes.create_string_buffer(256)\n"
        "    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(1), buf, ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))\n"
        "    print(name, errno.errorcode.get(ctypes.get_errno()) if rc < 0 else 'OK')\n"
        "print('ptrace', libc.ptrace(0, 0, 0, 0))")  # PTRACE_TRACEME: still allowed
    lines = dict(line.split() for line in r.content.splitlines())
    assert lines == {"io_uring_setup": "ENOSYS", "keyctl": "ENOSYS", "add_key": "ENOSYS", "userfaultfd": "ENOSYS",
                     "bpf": "ENOSYS", "perf_event_open": "ENOSYS", "ptrace": "0"}, r.content


def test_fallocate_refused_when_glm_agent_is_not_root(as_nobody):
    res = as_nobody("id -u; cd /tmp; fallocate -l 10M big; fallocate -n -l 10M big; du -k big", CFG)
    lines = res.stdout.splitlines()
    assert lines[0] == "65534", res.stdout + res.stderr
    assert len(re.findall("not supported|unsupported", res.stderr)) == 2, res.stdout + res.stderr
    assert lines[-1].split()[0] == "0", res.stdout + res.stderr


@needs_bwrap
def test_sandbox_check_reports_the_filter():
    from typer.testing import CliRunner

    from glm_agent.cli.sandbox import app

    out = CliRunner().invoke(app, ["check", "--memory-mb", "1024"])
    assert out.exit_code == 0, out.output
    assert "seccomp filter" in out.output.splitlines()[0]
    rows = {re.split(r"\s{2,}", line)[0]: line for line in out.output.splitlines()}
    assert re.search(r"refused \(EOPNOTSUPP\).*\bok$", rows.get("fallocate (quota)", "")), out.output
    assert re.search(r"refused \(ENOSYS\).*\bok$", rows.get("other filtered calls", "")), out.output


@needs_bwrap
def test_without_a_filter_for_the_cpu_the_sandbox_says_so(monkeypatch, ws, sh):
    """On an architecture the filter does not know, sandboxes still start, without it, and
    `describe()` / `sandbox check` say so."""
    from glm_agent.sandbox import seccomp
    from glm_agent.sandbox.probe import check_rows

    monkeypatch.setattr(seccomp, "host_arch", lambda: "riscv64")
    box = Sandbox(CFG, ws)
    try:
        argv, _, _ = box.command(["/bin/true"])
        assert "--seccomp" not in (box.private_dir() / "bwrap-1.args").read_bytes().split(b"\0")
        assert not any(str(a).endswith(".bpf") for a in argv)
        assert "NO seccomp filter (none for riscv64)" in box.describe()
    finally:
        box.close()
    assert "Seccomp:\t0" in sh("grep Seccomp: /proc/self/status", ws, CFG).output
    rows = check_rows({"fallocate": "allowed"}, CFG, isolated=True, nprocs_how="pids cgroup", rebound=[],
                      shell_cap=None)
    row = next(r for r in rows if r[0] == "fallocate (quota)")
    assert "no seccomp filter for riscv64" in row[1] and row[2] == ""


@needs_bwrap
def test_a_bubblewrap_that_cannot_load_the_filter_gives_sandboxes_that_say_so(tmp_path, monkeypatch, ws, sh):
    """Where seccomp is unavailable (an old kernel, a container that forbids it), sandboxes
    still start, without the filter, and say so; `sandbox check` marks it as failing."""
    import shutil

    from glm_agent.sandbox.probe import check_rows

    wrapper = tmp_path / "bwrap"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = --seccomp ] && { echo "bwrap: seccomp: Invalid argument" >&2;'
                       f' exit 1; }}; done\nexec {shutil.which("bwrap")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("GLM_AGENT_BWRAP", str(wrapper))
    box = Sandbox(CFG, ws)
    assert "NO seccomp filter (bubblewrap could not load it: bwrap: seccomp: Invalid argument)" in box.describe()
    res = sh("grep Seccomp: /proc/self/status", ws, CFG)
    assert res.exit_code == 0 and "Seccomp:\t0" in res.output, res.output
    rows = check_rows({"fallocate": "allowed"}, CFG, isolated=True, nprocs_how="pids cgroup", rebound=[],
                      shell_cap=None)
    assert ("fallocate (quota)", "allowed: the seccomp filter is NOT in effect", "FAIL") in rows

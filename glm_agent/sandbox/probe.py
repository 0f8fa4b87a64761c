"""What `glm-agent sandbox check` measures from inside a sandbox, and the table it prints.

`PROBE` runs in a sandboxed kernel and prints one JSON object of facts (capabilities, uid,
limits, what mounts and namespaces it may make, which system calls the seccomp filter
refuses, what it sees of hidden and read-only places, network, processes). `check_rows` turns those facts into rows of (what, found,
verdict); the verdict is "ok", "FAIL", or "" where nothing is expected (no sandbox).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from glm_agent.sandbox import seccomp
from glm_agent.sandbox.config import SandboxConfig

__all__ = ["PROBE", "probe_code", "check_rows", "format_table", "Row"]

Row = tuple[str, str, str]

PROBE = r"""
import ctypes, errno, json, os, resource, socket, stat
HOST = json.loads(HOST_JSON)
facts = dict()
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
for key in ('CapEff', 'CapBnd', 'NoNewPrivs'):
    facts[key] = status.get(key, '?').strip()
facts['uid'] = os.getuid()
try:
    facts['uid_map'] = open('/proc/self/uid_map').read().split()
except OSError:
    facts['uid_map'] = []
facts['rlimits'] = dict((n, resource.getrlimit(getattr(resource, 'RLIMIT_' + n))[1]) for n in ('AS', 'CPU', 'FSIZE', 'NPROC'))
libc = ctypes.CDLL(None, use_errno=True)
def outcome(rc):
    err = ctypes.get_errno()
    name = 'EOPNOTSUPP' if err == errno.EOPNOTSUPP else errno.errorcode.get(err, '?')
    return 'allowed' if rc >= 0 else 'refused (' + name + ')'
# The seccomp filter: fallocate (1 MiB in the workspace), and calls made harmless by their
# arguments (an fd they return is closed).
fd = os.open('.glm-probe-fallocate', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
try:
    libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    facts['fallocate'] = outcome(libc.fallocate64(fd, 0, 0, 1 << 20))
finally:
    os.close(fd)
    os.unlink('.glm-probe-fallocate')
facts['filtered'] = dict()
buf = ctypes.create_string_buffer(256)
for name, args in (('io_uring_setup', (1, buf)), ('keyctl', (0, -3, 0)), ('userfaultfd', (1,)),
                   ('bpf', (-1, 0, 0)), ('perf_event_open', (0, 0, -1, -1, 0))):
    if name in HOST['syscalls']:
        rc = libc.syscall(ctypes.c_long(HOST['syscalls'][name]), *[a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args])
        facts['filtered'][name] = outcome(rc)
        if rc >= 0 and name != 'keyctl':
            os.close(rc)
# Attempts that change mounts run only in a sandbox (its own mount namespace): without one
# they would act on the host.
if HOST['isolated']:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        facts['raise_rlimit'] = 'allowed'
    except (ValueError, OSError) as e:
        facts['raise_rlimit'] = 'refused'
    facts['umount'] = outcome(libc.umount2(b'/root', 2))
    facts['remount'] = outcome(libc.mount(None, b'/usr', None, 32 | 4096, None))
    facts['mount'] = outcome(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None))
    try:
        os.mknod('/tmp/.probe-null', stat.S_IFCHR | 0o600, os.makedev(1, 3))
        facts['mknod'] = 'allowed'
    except OSError as e:
        facts['mknod'] = 'refused (' + errno.errorcode.get(e.errno, '?') + ')'
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(0x10000000) == 0 else 1)
    facts['userns'] = 'allowed' if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else 'refused'
facts['hidden'] = dict()
for p in HOST['hidden']:
    if os.path.isdir(p):
        facts['hidden'][p] = sorted(os.listdir(p))
    else:
        facts['hidden'][p] = 'empty file' if os.path.exists(p) and os.path.getsize(p) == 0 else ('absent' if not os.path.exists(p) else 'VISIBLE')
facts['writable'] = dict()
for p in (HOST['read_only'] if HOST['isolated'] else []) + [os.getcwd()]:
    try:
        with open(os.path.join(p, '.glm-probe'), 'w'):
            pass
        os.unlink(os.path.join(p, '.glm-probe'))
        facts['writable'][p] = True
    except OSError:
        facts['writable'][p] = False
facts['interfaces'] = sorted(name for _, name in socket.if_nameindex())
facts['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
facts['pid'] = os.getpid()
facts['cwd'] = os.getcwd()
print(json.dumps(facts))
"""

_READ_ONLY = ["/", "/usr", "/etc", "/var"]


def probe_code(hidden: Sequence[str], isolated: bool) -> str:
    """PROBE with what the host knows filled in."""
    numbers = seccomp.syscall_numbers() if seccomp.supported() else {}
    host = {"hidden": list(hidden), "read_only": _READ_ONLY, "isolated": isolated, "syscalls": numbers}
    return f"HOST_JSON = {json.dumps(json.dumps(host))}\n{PROBE}"


def _size(n: int, unit: int = 1 << 20, name: str = "MiB") -> str:
    return "unlimited" if n < 0 or n >= 1 << 62 else f"{n // unit} {name}"


def _quota(config: SandboxConfig) -> str:
    # Read with getattr: the quota fields may not exist in every version of SandboxConfig.
    mb = getattr(config, "workspace_quota_mb", None)
    files = getattr(config, "workspace_max_files", None)
    if mb is None and getattr(config, "quota_bytes", None):
        mb = config.quota_bytes // (1 << 20)
    if files is None:
        files = getattr(config, "quota_files", None)
    parts = ([f"{mb} MiB"] if mb else []) + ([f"{files:,} files"] if files else [])
    return ", ".join(parts) or "none"


def check_rows(facts: dict[str, Any], config: SandboxConfig, *, isolated: bool, nprocs_how: str,
               rebound: Sequence[str], shell_cap: str | None) -> list[Row]:
    """Rows of the `sandbox check` table. `nprocs_how` says what enforces the process limit,
    `rebound` lists the interpreter folders bound back into hidden places."""

    def verdict(good: bool) -> str:
        return ("ok" if good else "FAIL") if isolated else ""

    rows: list[Row] = []
    cap = facts.get("CapEff", "?")
    none = cap.strip("0") == ""
    rows.append(("capabilities (CapEff)", f"{cap} ({'none' if none else 'HELD'})", verdict(none)))
    if shell_cap is not None:
        rows.append(("shell tool CapEff", shell_cap, verdict(shell_cap.strip("0") == "")))
    bnd = facts.get("CapBnd", "?")
    rows.append(("bounding set (CapBnd)", f"{bnd}, no_new_privs={facts.get('NoNewPrivs')}",
                 verdict(bnd.strip("0") == "" or facts.get("NoNewPrivs") == "1")))
    uid_map = facts.get("uid_map") or []
    own_ns = uid_map[:3] != ["0", "0", "4294967295"] and bool(uid_map)
    user = f"uid {facts.get('uid')}" + (f", own user namespace (maps {uid_map[0]} to host uid {uid_map[1]})"
                                        if own_ns else ", host user namespace")
    rows.append(("user", user, verdict(True)))
    for key, what in (("mount", "mount a file system"), ("umount", "umount /root"),
                      ("remount", "remount /usr read-write"), ("mknod", "create a device node"),
                      ("userns", "new user namespace"), ("raise_rlimit", "raise a limit")):
        found = facts.get(key, "not checked (no sandbox)")
        rows.append((what, found, verdict(found.startswith("refused"))))
    rows += _filter_rows(facts, isolated)
    rl = facts.get("rlimits", {})
    mem_ok = not config.memory_mb or rl.get("AS") == config.memory_mb << 20
    rows.append(("memory (RLIMIT_AS)", _size(rl.get("AS", -1)), verdict(mem_ok)))
    cpu = rl.get("CPU", -1)
    rows.append(("CPU time (RLIMIT_CPU)", "unlimited" if cpu < 0 or cpu >= 1 << 62 else f"{cpu} s",
                 verdict(not config.cpu_seconds or cpu == config.cpu_seconds)))
    rows.append(("file size (RLIMIT_FSIZE)", _size(rl.get("FSIZE", -1)), verdict(True)))
    rows.append(("processes + threads", f"{config.nprocs} ({nprocs_how})" if config.nprocs else "unlimited",
                 verdict(not config.nprocs or "NOT" not in nprocs_how)))
    rows.append(("workspace quota", _quota(config), ""))
    hidden = facts.get("hidden", {})
    allowed = {}
    for path in rebound:
        for top in hidden:
            if path.startswith(top.rstrip("/") + "/"):
                allowed.setdefault(top, set()).add(path[len(top.rstrip("/")) + 1:].split("/")[0])
    for path, seen in hidden.items():
        if isinstance(seen, list):
            extra = set(seen) - allowed.get(path, set())
            shown = ("empty" if not seen else
                     f"only {', '.join(sorted(seen))} (interpreter, read-only)" if not extra else
                     f"VISIBLE: {', '.join(sorted(seen)[:6])}")
            rows.append((f"hidden {path}", shown, verdict(not extra)))
        else:
            rows.append((f"hidden {path}", seen, verdict(seen != "VISIBLE")))
    for path, writable in facts.get("writable", {}).items():
        if path == facts.get("cwd"):
            rows.append((f"workspace {path}", "writable" if writable else "NOT WRITABLE", verdict(writable)))
        else:
            rows.append((f"read-only {path}", "writable" if writable else "read-only", verdict(not writable)))
    interfaces = facts.get("interfaces", [])
    offline = interfaces == ["lo"] or not interfaces
    rows.append(("network", "none (only loopback)" if offline else f"interfaces: {', '.join(interfaces)}",
                 verdict(offline or config.network)))
    pids = facts.get("pids", [])
    own_pidns = bool(pids) and max(pids) < 1000 and 1 in pids
    rows.append(("PID namespace", f"own ({len(pids)} processes visible)" if own_pidns else
                 f"host ({len(pids)} processes visible)", verdict(own_pidns)))
    return rows


def _filter_rows(facts: dict[str, Any], isolated: bool) -> list[Row]:
    """What the seccomp filter refused (fallocate: the workspace quota depends on it)."""
    found = facts.get("fallocate", "not checked")
    if not isolated:
        return [("fallocate (quota)", found, "")]
    if not seccomp.supported():
        return [("fallocate (quota)", f"{found}: no seccomp filter for {seccomp.host_arch()}, so fallocate "
                 "can overshoot the workspace quota", "")]
    if found == "refused (EOPNOTSUPP)":
        rows = [("fallocate (quota)", f"{found}, seccomp filter", "ok")]
    else:  # the first line of `sandbox check` (describe()) says why there is no filter
        rows = [("fallocate (quota)", f"{found}: the seccomp filter is NOT in effect", "FAIL")]
    filtered = facts.get("filtered", {})
    refused = all(v == "refused (ENOSYS)" for v in filtered.values()) and bool(filtered)
    short = {"io_uring_setup": "io_uring", "perf_event_open": "perf"}
    shown = (f"refused (ENOSYS): {', '.join(short.get(k, k) for k in filtered)}" if refused else
             ", ".join(f"{k} {v}" for k, v in filtered.items() if v != "refused (ENOSYS)") or "not checked")
    rows.append(("other filtered calls", shown, "ok" if refused else "FAIL"))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    width = max(len(r[0]) for r in rows)
    found_width = min(60, max(len(r[1]) for r in rows))
    lines = [f"{'check':<{width}}  {'inside the sandbox':<{found_width}}  verdict"]
    for what, found, verdict in rows:
        lines.append(f"{what:<{width}}  {found:<{found_width}}  {verdict}".rstrip())
    return "\n".join(lines)

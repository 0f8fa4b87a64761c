"""Attack: root inside the sandbox uses its privileges. As root (the default in containers)
sandboxed code must hold no capability: it cannot mount, umount (to uncover the hidden
home), remount host folders read-write, make device nodes, raise its limits, leave its
pids cgroup, make user namespaces in which it would hold capabilities again, or act on
processes outside. Tried through the python kernel, the shell tool, `sandbox check`, and as
an unprivileged user.

(Raising a limit needs CAP_SYS_RESOURCE, which some containers lack even for root: the
limit checks ride along with the capability checks.)
"""

from __future__ import annotations

import shlex
import subprocess
import textwrap
import time

import pytest
from typer.testing import CliRunner

from glm_agent.cli.sandbox import app
from glm_agent.sandbox import SandboxConfig, bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

def _userns_can_be_disabled() -> bool:
    """bubblewrap >= 0.8 on a kernel with user namespaces (checked directly, not through the
    code under test)."""
    try:
        return subprocess.run(["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--unshare-pid",
                               "--unshare-user", "--disable-userns", "--", "/bin/true"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_disable_userns = pytest.mark.skipif(
    bwrap_available() and not _userns_can_be_disabled(),
    reason="this bubblewrap or kernel cannot disable nested user namespaces (bubblewrap >= 0.8 needed)")

STATUS_CODE = "print(open('/proc/self/status').read())"


def caps(status_text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in status_text.splitlines())
            if k.startswith("Cap") or k == "NoNewPrivs"}


def assert_powerless(c: dict[str, str]) -> None:
    assert int(c["CapEff"], 16) == 0 and int(c["CapPrm"], 16) == 0 and int(c["CapAmb"], 16) == 0, c
    # Nothing to regain on exec: an empty bounding set, or no_new_privs.
    assert int(c["CapBnd"], 16) == 0 or c["NoNewPrivs"] == "1", c


RAISE_CODE = """
import resource
for name in ('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_NPROC'):
    try:
        resource.setrlimit(getattr(resource, name), (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print('RAISED', name)
    except (ValueError, OSError):
        print('refused', name)
print('AS', resource.getrlimit(resource.RLIMIT_AS))
"""


@pytest.mark.parametrize("entry", ["kernel", "shell"])
def test_sandboxed_code_holds_no_capability(entry, kernel_factory, ws, config, sh):
    """No capability, and so no way to raise the limits (CAP_SYS_RESOURCE)."""
    if entry == "kernel":
        res = kernel_factory(ws).execute_sync(STATUS_CODE + "\n" + RAISE_CODE)
        assert res.status == "ok", res.text
        text = res.text
    else:
        text = sh("cat /proc/self/status; grep Cap /proc/1/status | sed 's/^/pid1/';"
                  f"prlimit --pid $$ --as=unlimited:unlimited; python3 -c {shlex.quote(RAISE_CODE)}",
                  ws, config).output
    assert_powerless(caps(text))
    pid1 = {k[4:]: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k.startswith("pid1")}
    if pid1:  # bubblewrap itself, as pid 1 of the sandbox, holds nothing either
        assert int(pid1["CapEff"], 16) == 0, pid1
    assert "RAISED" not in text and text.count("refused") == 4, text
    assert f"AS ({1024 << 20}, {1024 << 20})" in text


def _attack_script(targets) -> str:
    """Shell code that tries every way root would use to write host files."""
    lines = ["umount -l /root", "umount -l /tmp", "umount -l /etc/ssh"]
    for mount_point in ("/", "/usr", "/etc", "/var", "/root", "/mnt/data"):
        lines.append(f"mount -o remount,rw,bind {mount_point}")
        lines.append(f"mount -o remount,rw {mount_point}")
    lines += ["mount -t tmpfs none /etc", "mount --bind /mnt/data /usr/local",
              "mknod /tmp/vda b 254 0", "mknod /mnt/data/null c 1 3"]
    for path in targets.all.values():
        lines.append(f"echo pwned >> {path}")
        lines.append(f"echo pwned > {path}")
    lines.append("ls -A /root")
    return "\n".join(f"{line} 2>&1 || echo REFUSED: {line.split()[0]}" for line in lines)


@pytest.mark.parametrize("entry", ["shell", "kernel"])
def test_mounts_cannot_be_changed_to_write_host_files(entry, kernel_factory, ws, config, targets, sh):
    script = _attack_script(targets)
    if entry == "shell":
        out = sh(script, ws, config, timeout=30).output
    else:
        res = kernel_factory(ws).execute_sync(
            f"import subprocess\nprint(subprocess.run(['bash', '-c', {script!r}], capture_output=True, "
            "text=True).stdout)", timeout=30)
        out = res.text
    assert not targets.problems(), out
    for command in ("umount", "mount", "mknod"):
        assert f"REFUSED: {command}" in out
    assert not (ws / "null").exists()
    # The hidden home stayed hidden: only the interpreter's folders are in /root.
    assert ".bashrc" not in out.split()


def test_python_syscalls_are_refused_too(kernel_factory, ws, targets):
    """The same through the syscalls themselves (no mount binary needed)."""
    k = kernel_factory(ws)
    res = k.execute_sync(textwrap.dedent(f"""
        import ctypes, os, stat
        libc = ctypes.CDLL(None, use_errno=True)
        results = dict()
        results['umount /root'] = libc.umount2(b'/root', 2)
        results['remount /var rw'] = libc.mount(None, b'/var', None, 32 | 4096, None)
        results['remount /etc rw'] = libc.mount(None, b'/etc', None, 32 | 4096, None)
        results['mount tmpfs'] = libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)
        for name, path in { {k: str(v) for k, v in targets.all.items()}!r}.items():
            try:
                with open(path, 'a') as f:
                    f.write('pwned')
                results['write ' + name] = 0
            except OSError:
                results['write ' + name] = -1
        try:
            os.mknod('/tmp/null', stat.S_IFCHR | 0o600, os.makedev(1, 3))
            results['mknod'] = 0
        except OSError:
            results['mknod'] = -1
        print(results)
    """))
    assert res.status == "ok", res.text
    results = eval(res.text)  # noqa: S307 - our own repr of a dict
    # Writing "home" succeeds into the sandbox's own empty /root; what counts is the host.
    assert not targets.problems(), repr(results)
    assert all(rc != 0 for name, rc in results.items() if not name.startswith("write")), repr(results)


def test_host_processes_and_the_pids_cgroup_are_out_of_reach(kernel_factory, ws):
    victim = subprocess.Popen(["sleep", "60"])
    k = kernel_factory(ws)
    try:
        k.start_sync()
        group = k.sandbox.cgroup
        res = k.execute_sync(textwrap.dedent(f"""
            import ctypes, os, signal, subprocess
            libc = ctypes.CDLL(None, use_errno=True)
            out = dict()
            try:
                os.kill({victim.pid}, signal.SIGKILL)
                out['kill'] = 'sent'
            except OSError as e:
                out['kill'] = type(e).__name__
            out['ptrace'] = libc.ptrace(16, {victim.pid}, None, None)  # PTRACE_ATTACH
            # Leave the pids cgroup: needs the cgroup fs writable.
            subprocess.run('mount -o remount,rw,bind /sys/fs/cgroup/pids; mount -o remount,rw /sys/fs/cgroup/pids; '
                           'echo $$ > /sys/fs/cgroup/pids/cgroup.procs', shell=True, capture_output=True)
            for path in ('/sys/fs/cgroup/pids/cgroup.procs', '/sys/fs/cgroup/pids/glm-agent/cgroup.procs'):
                try:
                    with open(path, 'w') as f:
                        f.write(str(os.getpid()))
                    out[path] = 'moved'
                except OSError as e:
                    out[path] = type(e).__name__
            print(out)
        """))
        assert res.status == "ok", res.text
        out = eval(res.text)  # noqa: S307
        assert out["ptrace"] != 0 and "moved" not in out.values(), out
        time.sleep(0.2)
        assert victim.poll() is None, "a host process was killed from inside the sandbox"
        if group is not None:  # every sandboxed process is still in the sandbox's own cgroup
            assert set(k.pids()) - {k.pids()[0]} <= set(group.pids())
    finally:
        victim.kill()
        victim.wait()


@needs_disable_userns
@pytest.mark.parametrize("entry", ["kernel", "shell"])
def test_no_user_namespaces_inside(entry, kernel_factory, ws, config, sh):
    """A nested user namespace would hand the code every capability again (within it),
    and with them the kernel's namespace-only attack surface."""
    code = "unshare -U true && echo USERNS_MADE; unshare -Ur true && echo USERNS_ROOT"
    if entry == "kernel":
        out = kernel_factory(ws).execute_sync(
            f"import subprocess\nprint(subprocess.run({code!r}, shell=True, capture_output=True, text=True).stdout)").text
    else:
        out = sh(code, ws, config).output
    assert "USERNS_MADE" not in out and "USERNS_ROOT" not in out, out


def test_sandbox_check_reports_no_privileges():
    res = CliRunner().invoke(app, ["check", "--memory-mb", "1024"])
    assert res.exit_code == 0, res.output
    rows = {line.split("  ")[0]: line for line in res.output.splitlines()}
    assert "0000000000000000 (none)" in rows["capabilities (CapEff)"] and rows["capabilities (CapEff)"].endswith("ok")
    assert rows["shell tool CapEff"].split()[3] == "0000000000000000"
    for row in ("mount a file system", "umount /root", "remount /usr read-write", "create a device node",
                "raise a limit"):
        assert "refused" in rows[row] and rows[row].endswith("ok"), rows[row]


@needs_disable_userns
def test_unprivileged_user_gets_the_same_isolation(as_nobody):
    """As a non-root user bubblewrap works without privileges already; what must hold is
    the same: no capability, no mount, no nested user namespace."""
    script = ("grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id -u; "
              "mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; umount /root 2>/dev/null && echo UMOUNTED; "
              "unshare -U true 2>/dev/null && echo USERNS_MADE; echo done")
    # /root stays visible but unreadable (0700): nobody can neither read nor bind from it.
    res = as_nobody(script, SandboxConfig(timeout=10, hidden=("/home", "/run")))
    assert res.stdout.rstrip().endswith("done"), res.stdout + res.stderr
    assert_powerless(caps(res.stdout))
    assert "65534" in res.stdout.split()
    assert "MOUNTED" not in res.stdout and "UMOUNTED" not in res.stdout
    assert "USERNS_MADE" not in res.stdout

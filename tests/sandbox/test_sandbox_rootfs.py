"""A writable copy-on-write root (SandboxConfig.writable_root, sandbox/rootfs.py): real
bubblewrap, real overlays, as root and as the unprivileged `nobody`. Writes land in the sandbox
only; what the sandbox hides stays hidden; it is gone when the sandbox ends."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from glm_agent.sandbox import Sandbox, SandboxConfig, bwrap_available, run_command
from glm_agent.sandbox.rootfs import launcher_path

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=30, writable_root=True, root_size_mb=64)
# Where tasks write (AgentBench's OS tasks): existing system folders and new top-level ones.
TARGETS = ["/usr/local/bin/glm-x", "/usr/glm-x", "/var/glm-x", "/etc/glm-x", "/opt/glm-x", "/data/glm-x",
           "/working/glm-x", "/glm-testfile"]


def sh(command: str, ws: Path, config: SandboxConfig = CFG):
    return asyncio.run(run_command(command, ws, config))


def write_all() -> str:
    return " && ".join(f"mkdir -p {os.path.dirname(t)} && echo in > {t} && cat {t}" for t in TARGETS)


def assert_host_untouched() -> None:
    for target in TARGETS:
        assert not os.path.exists(target), f"{target} leaked to the host"
    for top in ("/data", "/working"):
        assert not os.path.exists(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="root's writable root (many ids mapped)")
def test_root_writes_everywhere_inside_and_nothing_outside(tmp_path):
    r = sh(f"{write_all()} && useradd -m glmuser && su glmuser -c 'id -un; touch ~/mine' && ls -l /home/glmuser "
           "&& echo x >> /etc/passwd && tail -1 /etc/passwd", tmp_path)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("in\n" * len(TARGETS) + "glmuser\n")
    assert "glmuser glmuser" in r.output and r.output.endswith("x\n")
    assert_host_untouched()
    with open("/etc/passwd") as f:
        assert "glmuser" not in f.read() and not f.read().endswith("x\n")
    # A second sandbox starts again from the host's root.
    r = sh("ls /usr/local/bin/glm-x /data 2>&1; id glmuser 2>&1", tmp_path)
    assert r.output.count("No such file") == 2 and "no such user" in r.output, r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="root's writable root (many ids mapped)")
def test_the_writable_root_keeps_every_protection(tmp_path):
    # What may show in root's hidden home: the interpreter's folders, bound back read-only.
    rebound = {Path(p).relative_to("/root").parts[0] for p in Sandbox(CFG, tmp_path).rebound_folders()
               if p.startswith("/root/")}
    r = sh("cut -d: -f2 /etc/shadow | sort -u; ls -A /etc/ssh | wc -l; ls -A ~root | grep -vxF -e "
           f"{' -e '.join(sorted(rebound)) or 'none'} | wc -l; ls -A /run | wc -l; "
           "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), timeout=1)' 2>&1 | tail -1; "
           "unshare -U true 2>&1 | tail -1; mount -t tmpfs x /mnt 2>&1 | head -1; "
           "echo 1 > /proc/sys/kernel/hostname 2>&1; echo 1 > /sys/kernel/profiling 2>&1; "
           "grep -c glm-root /proc/mounts", tmp_path)
    lines = r.output.splitlines()
    assert lines[0] == "*", r.output  # a stand-in shadow file: no host password hash
    assert lines[1:4] == ["0", "0", "0"], r.output  # hidden folders stay empty
    assert "Network is unreachable" in lines[4]
    assert "No space left on device" in lines[5] or "Operation not permitted" in lines[5]  # no nested namespaces
    assert "permission denied" in lines[6].lower()
    assert "Read-only file system" in r.output and lines[-1] == "1", r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="root's writable root (many ids mapped)")
def test_other_users_private_folders_stay_private_and_read_as_empty(tmp_path):
    from glm_agent.sandbox.rootfs import foreign_private_dirs

    private = Path(tempfile.mkdtemp(prefix="glm-foreign-", dir="/var/tmp"))
    try:
        (private / "secret").write_text("not for the sandbox")
        os.chown(private / "secret", 12345, 12345)
        os.chown(private, 12345, 12345)
        private.chmod(0o700)
        foreign_private_dirs.cache_clear()
        r = sh(f"ls -A {private} | wc -l; cat {private}/secret 2>&1 | tail -1; find {private} -name secret; "
               f"echo find=$?; chmod 777 {private} 2>&1; cat /proc/self/uid_map | wc -l", tmp_path)
        assert r.output.splitlines()[:3] == ["0", f"cat: {private}/secret: No such file or directory", "find=0"], \
            r.output
        assert private.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(private, ignore_errors=True)
        foreign_private_dirs.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="root's writable root (many ids mapped)")
def test_the_root_has_a_size_limit(tmp_path):
    r = sh("head -c 100M /dev/zero > /var/big; echo $?; df -m / | tail -1 | awk '{print $2}'", tmp_path,
           CFG.with_(file_size_mb=1024, workspace_quota_mb=None))
    assert "No space left on device" in r.output and r.output.split()[-1] == "64", r.output


def test_the_read_only_root_is_still_the_default(tmp_path):
    r = sh("touch /usr/local/bin/glm-x /glm-x 2>&1", tmp_path, CFG.with_(writable_root=False))
    assert r.output.count("Read-only file system") == 2
    assert "writable copy-on-write" in Sandbox(CFG, tmp_path).describe()
    assert "read-only /" in Sandbox(CFG.with_(writable_root=False), tmp_path).describe()


# -- as nobody -------------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root (to become nobody), setpriv and /usr/bin/python3")
def test_nobody_gets_a_writable_root_too(tmp_path):
    # Everything from the launcher on runs as uid 65534; the argument files are opened by root
    # first, as bubblewrap's are. The launcher is copied where nobody can read it.
    home = Path(tempfile.mkdtemp(prefix="glm-nobody-root-"))
    try:
        home.chmod(0o755)
        ws = home / "ws"
        ws.mkdir()
        os.chown(ws, 65534, 65534)
        launcher = home / "rootfs.py"
        shutil.copy(launcher_path(), launcher)
        launcher.chmod(0o644)
        box = Sandbox(CFG.with_(nprocs=None), ws, python=SYSTEM_PYTHON)
        try:
            argv, env, cwd = box.command(["/bin/sh", "-c", write_all() + " && id -u && touch /etc/hosts && echo ok"])
            i = argv.index(launcher_path())
            argv[i] = str(launcher)
            argv[i - 2:i - 2] = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            os.chmod(box.private_dir(), 0o711)
            os.chown(box._root_mount, 65534, 65534)
            out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        finally:
            box.close()
        assert out.returncode == 0, out.stderr
        assert out.stdout == "in\n" * len(TARGETS) + "0\nok\n"
        assert_host_untouched()
    finally:
        shutil.rmtree(home, ignore_errors=True)


PASSWORD_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")


@pytest.mark.skipif(os.geteuid() != 0, reason="root reads the host's password files")
@pytest.mark.parametrize("writable", [False, True], ids=["read-only root", "writable root"])
def test_password_files_and_their_backups_are_hidden(tmp_path, writable):
    present = [f for f in PASSWORD_FILES if os.path.exists(f)]
    if not present:
        pytest.skip("no password files on this host")
    r = sh("; ".join(f"echo \"{f} $(cat {f} 2>/dev/null | wc -c) $(cut -d: -f2 {f} 2>/dev/null | sort -u | "
                     "tr '\\n' ' ')\"" for f in present),
           tmp_path, CFG.with_(writable_root=writable))
    for line, path in zip(r.output.splitlines(), present):
        name, size, *hashes = line.split()
        assert name == path
        if writable:  # stand-ins programs may rewrite: every password locked
            assert set(hashes) <= {"*"}, line
        else:  # /dev/null (unreadable or empty)
            assert size == "0", line

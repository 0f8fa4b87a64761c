"""Sandbox: builds the command line that runs a program inside bubblewrap + rlimits.

Layout inside the sandbox: the host root read-only, fresh /dev and /proc (own PID
namespace), a private /tmp, host home directories and /run replaced by empty ones, the
session workspace writable at `/mnt/data`, no network (own empty network namespace).
The interpreter's own directories are bound back read-only when they live under a
hidden directory (pyenv under /root), so the same Python runs inside.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.errors import SandboxUnavailableError
from glm_agent.sandbox.limits import PidsCgroup, pids_cgroup_root, rlimit_argv

__all__ = ["Sandbox", "find_bwrap", "check_bwrap", "bwrap_available", "SANDBOX_HOME"]

SANDBOX_HOME = "/tmp/home"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_bwrap() -> str | None:
    return os.environ.get("GLM_AGENT_BWRAP") or shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """None when bwrap can build our namespaces here, else the reason it cannot."""
    try:
        proc = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--unshare-net", "--unshare-ipc", "--die-with-parent", "--", "/bin/true"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} failed to run: {exc}"
    if proc.returncode != 0:
        return f"{bwrap} cannot create namespaces here: {proc.stderr.strip() or proc.returncode}"
    return None


def check_bwrap() -> str:
    """Path of a working bwrap, or SandboxUnavailableError saying why not."""
    bwrap = find_bwrap()
    if not bwrap:
        raise SandboxUnavailableError("bubblewrap (`bwrap`) is not installed")
    reason = _probe(bwrap)
    if reason:
        raise SandboxUnavailableError(reason)
    return bwrap


def bwrap_available() -> bool:
    try:
        check_bwrap()
    except SandboxUnavailableError:
        return False
    return True


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _python_paths(python: str) -> list[str]:
    """Directories the interpreter needs: prefixes and every existing sys.path entry."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(python)),
             os.path.dirname(os.path.abspath(python))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    paths.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isdir(p))
    out = sorted({os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths})
    return out


def _open_up(destinations: Sequence[str], writable: Sequence[str]) -> list[str]:
    """Mount points for bind destinations missing on the host.

    A missing destination needs a writable parent while the sandbox is set up. Its nearest
    existing ancestor (a read-only bind) is replaced by a tmpfs into which that ancestor's
    own entries are bound back read-only. Ancestors under `writable` (tmpfs) and the root
    (bubblewrap's tmpfs) need nothing.
    """
    opened: list[str] = []
    for dest in destinations:
        dest = os.path.normpath(dest)
        if os.path.lexists(dest):
            continue
        parent = os.path.dirname(dest)
        while parent != "/" and not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if parent == "/" or parent in ("/tmp", "/dev", "/proc") or _under(parent, "/tmp"):
            continue
        if any(_under(parent, w) for w in writable) or parent in opened:
            continue
        opened.append(parent)
    args: list[str] = []
    for parent in sorted(opened, key=lambda p: p.count("/")):
        args += ["--tmpfs", parent]
        try:
            entries = sorted(os.listdir(parent))
        except OSError:
            entries = []
        for entry in entries:
            path = os.path.join(parent, entry)
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", path, path]
    return args


class Sandbox:
    """Command-line builder for one isolated environment (one kernel, or one shell).

    `open()` creates the pids cgroup, `close()` kills what is left in it and removes it.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        workspace: str | Path = ".",
        *,
        extra_rw: Sequence[str | Path] = (),
        python: str | None = None,
    ):
        self.config = config or SandboxConfig()
        self.workspace = Path(workspace).resolve()
        self.extra_rw = [str(Path(p).resolve()) for p in extra_rw]
        self.python = python or sys.executable
        self.isolated = not self.config.unsafe_no_sandbox
        self.bwrap = check_bwrap() if self.isolated else None
        self.cgroup: PidsCgroup | None = None
        self._opened = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> "Sandbox":
        if not self._opened:
            self.workspace.mkdir(parents=True, exist_ok=True)
            # RLIMIT_NPROC does not bind root; a cgroup does. Non-root users get the rlimit.
            if os.geteuid() == 0:
                self.cgroup = PidsCgroup.create(self.config.nprocs)
            self._opened = True
        return self

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        self._opened = False

    def kill_all(self) -> None:
        """Kill every process in this sandbox's cgroup (no-op without one)."""
        if self.cgroup is not None:
            self.cgroup.kill_all()

    # -- paths -----------------------------------------------------------------------

    @property
    def workdir(self) -> str:
        """The workspace as sandboxed code sees it."""
        return self.config.workspace_mount if self.isolated else str(self.workspace)

    def to_host(self, inside: str) -> Path | None:
        """Map a path seen inside the sandbox to the host, if it is in the workspace."""
        base = self.workdir
        if _under(inside, base):
            return self.workspace / os.path.relpath(inside, base)
        return None

    # -- command line ----------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment of sandboxed code (host variables are not inherited:
        they may hold API keys)."""
        env = {
            "PATH": os.path.dirname(os.path.abspath(self.python)) + ":" + _SYSTEM_PATH,
            "HOME": SANDBOX_HOME if self.isolated else str(self.workspace),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "TERM": "dumb",
            "TMPDIR": "/tmp",
        }
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if extra:
            env.update(extra)
        env.update(dict(self.config.env))
        return env

    def command(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) to launch `argv` inside the sandbox."""
        self.open()
        full_env = self.env(env)
        prefix: list[str] = self.cgroup.enter_argv() if self.cgroup else []
        if self.isolated:
            prefix += self._bwrap_args(full_env)
            launch_env = {"PATH": _SYSTEM_PATH}
            cwd = "/"
        else:
            setpriv = shutil.which("setpriv")
            if setpriv:  # die with the parent, like bwrap's --die-with-parent
                prefix += [setpriv, "--pdeathsig", "KILL", "--"]
            launch_env = full_env
            cwd = str(self.workspace)
        return prefix + rlimit_argv(self.config) + list(argv), launch_env, cwd

    def _bwrap_args(self, env: Mapping[str, str]) -> list[str]:
        cfg = self.config
        assert self.bwrap
        # The sandbox root is bubblewrap's own tmpfs with the host's top-level entries bound
        # read-only into it (rather than `--ro-bind / /`), so that bind destinations that do
        # not exist on the host (/mnt/data, /task ...) can still be created; it is made
        # read-only again at the end.
        args = [self.bwrap]
        for entry in sorted(os.listdir("/")):
            path = "/" + entry
            if entry in ("proc", "dev", "tmp"):
                continue
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.exists(path):
                args += ["--ro-bind", path, path]
        args += ["--dev", "/dev", "--proc", "/proc",
                 "--size", str(cfg.tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        hidden: list[str] = []
        for path in cfg.hidden:
            real = os.path.realpath(os.path.expanduser(path))
            if real in hidden or real == "/" or not os.path.exists(real):
                continue
            hidden.append(real)
        binds: list[tuple[str, str, str]] = []  # (flag, host, inside)
        for spec in cfg.ro_binds:
            host, inside = cfg.split_bind(spec)
            binds.append(("--ro-bind", os.path.realpath(host), inside))
        for spec in cfg.rw_binds:
            host, inside = cfg.split_bind(spec)
            binds.append(("--bind", os.path.realpath(host), inside))
        for path in self.extra_rw:
            binds.append(("--bind", path, path))
        binds.append(("--bind", str(self.workspace), cfg.workspace_mount))
        args += _open_up([inside for _, _, inside in binds], hidden)
        for real in sorted(hidden):
            if os.path.isdir(real):
                args += ["--tmpfs", real]
            else:
                args += ["--ro-bind", "/dev/null", real]
        # Bring back what the interpreter needs from hidden directories, read-only.
        rebind = [p for p in _python_paths(self.python) if any(_under(p, h) for h in hidden)]
        kept: list[str] = []
        for p in sorted(rebind):
            if not any(_under(p, k) for k in kept):
                kept.append(p)
        for p in kept:
            args += ["--ro-bind", p, p]
        for flag, host, inside in binds:
            args += [flag, host, inside]
        args += ["--dir", SANDBOX_HOME, "--remount-ro", "/"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
                 "--die-with-parent", "--new-session", "--clearenv"]
        if not cfg.network:
            args.append("--unshare-net")
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--chdir", cfg.workspace_mount, "--"]
        return args

    def describe(self) -> str:
        """One line saying what isolation is in effect."""
        cfg = self.config
        limits = []
        if cfg.memory_mb:
            limits.append(f"memory {cfg.memory_mb} MiB")
        if cfg.nprocs:
            if os.geteuid() != 0:
                how = "rlimit"
            elif self.cgroup is not None or pids_cgroup_root() is not None:
                how = "pids cgroup"
            else:
                how = "NOT enforced: root without a writable pids cgroup"
            limits.append(f"{cfg.nprocs} tasks ({how})")
        if cfg.cpu_seconds:
            limits.append(f"CPU {cfg.cpu_seconds} s")
        if cfg.file_size_mb:
            limits.append(f"files {cfg.file_size_mb} MiB")
        if self.isolated:
            where = (f"bubblewrap: read-only /, private /tmp, {'host network' if cfg.network else 'no network'}, "
                     f"own PID namespace, workspace at {cfg.workspace_mount}")
        else:
            where = "NO SANDBOX (--unsafe-no-sandbox): resource limits only"
        return f"{where}; limits: {', '.join(limits) or 'none'}"

"""Sandbox: builds the command line that runs a program inside bubblewrap + rlimits.

Layout inside the sandbox: the host root read-only, fresh /dev and /proc (own PID
namespace), a private /tmp, host home directories and /run replaced by empty ones, the
session workspace writable at `/mnt/data`, no network (own empty network namespace).
The interpreter's own folders are bound back read-only when they live under a hidden
directory or /tmp (see interpreter.py), so the same Python runs inside.

No privilege inside: every capability is dropped (root included), and, where bubblewrap
and the kernel allow it, the sandbox gets its own user namespace in which no further user
namespace can be made (no nested namespaces in which code would hold capabilities again).

bubblewrap reads its arguments from a file in a host-only folder (`--args 3`), so that the
sandbox's /proc/1/cmdline (bubblewrap itself) shows neither bind sources nor environment.
It reads the seccomp filter (seccomp.py) from another file there (`--seccomp 4`).

With `SandboxConfig.writable_root` the root is instead a copy-on-write overlay of the host's
(rootfs.py builds it in its own namespaces just before bubblewrap runs): writable, private to
this sandbox and gone with it; hidden paths stay hidden, and root inside keeps a container's
capabilities within its own user namespace (host root only; see rootfs.py).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence, Tuple

from glm_agent.sandbox import seccomp
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.errors import SandboxUnavailableError
from glm_agent.sandbox.hostdir import make_private_dir, remove_tree
from glm_agent.sandbox.interpreter import rebound_folders
from glm_agent.sandbox.limits import PidsCgroup, pids_cgroup_root, rlimit_argv
from glm_agent.sandbox.rootfs import foreign_private_dirs, launcher_path

__all__ = ["Sandbox", "Bind", "find_bwrap", "check_bwrap", "bwrap_available", "SANDBOX_HOME"]

# (host path, path inside the sandbox, writable)
Bind = Tuple[str, str, bool]

SANDBOX_HOME = "/tmp/home"
HOSTNAME = "sandbox"  # its own UTS namespace; a writable root also lists it in /etc/hosts
# What root keeps in a writable-root sandbox: most of Docker's default set, enough for useradd,
# chown, su and package scripts, in a user namespace where the host's other users are unmapped
# (so these never apply to their files). Not CAP_SETFCAP (file capabilities written there would
# hold on the host) nor CAP_MKNOD.
ROOT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
             "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_bwrap() -> str | None:
    return os.environ.get("GLM_AGENT_BWRAP") or shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """None when bwrap can build our namespaces here, else the reason it cannot."""
    try:
        proc = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--unshare-net", "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL", "--", "/bin/true"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} failed to run: {exc}"
    if proc.returncode != 0:
        return f"{bwrap} cannot create namespaces here: {proc.stderr.strip() or proc.returncode}"
    return None


@functools.lru_cache(maxsize=4)
def _userns_ok(bwrap: str) -> bool:
    """Whether bwrap can give the sandbox its own user namespace with nested ones disabled
    (bubblewrap >= 0.8 on a kernel that allows user namespaces)."""
    try:
        proc = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--unshare-pid", "--unshare-user",
             "--disable-userns", "--die-with-parent", "--cap-drop", "ALL", "--", "/bin/true"],
            capture_output=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@functools.lru_cache(maxsize=4)
def _seccomp_refused(bwrap: str, arch: str) -> str | None:
    """Why bwrap cannot install our seccomp filter here (None: it can, or there is none for
    this CPU). A kernel or container without seccomp gets sandboxes without the filter,
    which `describe()` and `sandbox check` then report, instead of no sandbox at all."""
    code = seccomp.program(arch)
    if code is None:
        return f"none for {arch}"
    read, write = os.pipe()
    try:
        os.write(write, code)  # a few hundred bytes: fits in the pipe
        os.close(write)
        write = -1
        proc = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--die-with-parent", "--seccomp", str(read),
             "--", "/bin/true"], capture_output=True, text=True, timeout=20, pass_fds=(read,))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not load it: {exc}"
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    if proc.returncode != 0:
        return f"bubblewrap could not load it: {proc.stderr.strip() or proc.returncode}"
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

    `open()` creates the pids cgroup; `close()` kills what is left in it and removes it, and
    removes the host-only folder that holds bubblewrap's argument files.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        workspace: str | Path = ".",
        *,
        python: str | None = None,
        private_dir: str | Path | None = None,
    ):
        self.config = config or SandboxConfig()
        self.workspace = Path(workspace).resolve()
        self.python = python or sys.executable
        self.isolated = not self.config.unsafe_no_sandbox
        self.bwrap = check_bwrap() if self.isolated else None
        self.cgroup: PidsCgroup | None = None
        self._opened = False
        # Host-only: never bound into the sandbox (made on first use, removed by close()).
        self._private_path = Path(private_dir) if private_dir is not None else None
        self._private: Path | None = None
        self._args_files = 0
        self._seccomp_file: Path | None = None
        self._root_mount: Path | None = None  # the writable root of the last command()
        # The command is the sandbox's PID 1 (bubblewrap --as-pid-1): it must reap orphans.
        self.as_pid_1 = False

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
        if self._private is not None:
            remove_tree(self._private)
            self._private = None
            self._seccomp_file = None
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

    def hidden_paths(self) -> list[str]:
        """The configured hidden paths that exist on the host, resolved (with a writable root
        as root, also the folders of other users that root inside may not list)."""
        hidden: list[str] = []
        for path in self.config.hidden:
            real = os.path.realpath(os.path.expanduser(path))
            if real not in hidden and real != "/" and os.path.exists(real):
                hidden.append(real)
        if self.config.writable_root and self.isolated and os.geteuid() == 0:
            for path in foreign_private_dirs(tuple(sorted(hidden))):
                if not any(_under(path, h) for h in hidden):
                    hidden.append(path)
        return hidden

    def rebound_folders(self) -> list[str]:
        """The interpreter's folders bound back read-only (under a hidden path or /tmp)."""
        return rebound_folders(self.python, self.hidden_paths())

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
        if self.config.memory_mb:
            # RLIMIT_AS counts address space that glibc reserves, unused, for each thread's
            # malloc arena (64 MiB each: 500 MiB in an idle kernel). Two arenas keep the limit
            # close to the memory really in use.
            env["MALLOC_ARENA_MAX"] = "2"
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if extra:
            env.update(extra)
        env.update(dict(self.config.env))
        return env

    def command(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, *, binds: Sequence[Bind] = ()
    ) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) to launch `argv` inside the sandbox. `binds` adds (host, inside,
        writable) mounts for this command only; they are ignored without a sandbox."""
        self.open()
        full_env = self.env(env)
        prefix: list[str] = self.cgroup.enter_argv() if self.cgroup else []
        if self.isolated:
            assert self.bwrap
            spec = self._root_spec() if self.config.writable_root else None
            args_file = self._write_args(self._bwrap_args(full_env, binds))
            filter_file = self._write_seccomp()
            if filter_file is None:
                prefix += ["/bin/sh", "-c", 'exec "$@" 3<"$0"', str(args_file)]
            else:  # the args file holds `--seccomp 4`
                prefix += ["/bin/sh", "-c", 'f=$1; shift; exec "$@" 3<"$0" 4<"$f"', str(args_file),
                           str(filter_file)]
            if spec is not None:
                prefix += [self.python, "-I", launcher_path(), json.dumps(spec), "--"]
            prefix += [self.bwrap, "--args", "3", "--"]
            launch_env = {"PATH": _SYSTEM_PATH}
            cwd = "/"
        else:
            setpriv = shutil.which("setpriv")
            if setpriv:  # die with the parent, like bwrap's --die-with-parent
                prefix += [setpriv, "--pdeathsig", "KILL", "--"]
            launch_env = full_env
            cwd = str(self.workspace)
        return prefix + rlimit_argv(self.config) + list(argv), launch_env, cwd

    def private_dir(self) -> Path:
        """This sandbox's host-only folder (0700), made on first use."""
        if self._private is None:
            if self._private_path is None:
                self._private = make_private_dir("s")
            else:
                self._private_path.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self._private_path, 0o700)
                self._private = self._private_path
        return self._private

    def _hidden_files(self) -> list[str]:
        return [p for p in self.hidden_paths() if not os.path.isdir(p)]

    def _root_spec(self) -> dict:
        """What rootfs.py needs: where to mount the root (a new host-only folder: each
        launch gets a fresh root), its size, and the hidden files it replaces."""
        path = self.private_dir() / f"root-{self._args_files + 1}"
        path.mkdir(mode=0o700)
        self._root_mount = path
        return {"mnt": str(path), "size_mb": self.config.root_size_mb, "hide_files": self._hidden_files(),
                "hostname": HOSTNAME}

    def _write_args(self, args: Sequence[str]) -> Path:
        if any("\0" in a for a in args):
            raise ValueError("a sandbox path or environment value contains a NUL character")
        self._args_files += 1
        path = self.private_dir() / f"bwrap-{self._args_files}.args"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(a.encode() + b"\0" for a in args))
        return path

    def _filtered(self) -> bool:
        """Whether this sandbox gets the seccomp filter (see `_seccomp_refused`)."""
        return self.bwrap is not None and _seccomp_refused(self.bwrap, seccomp.host_arch()) is None

    def _write_seccomp(self) -> Path | None:
        """The seccomp filter's file (written once per sandbox), or None without a filter."""
        if not self._filtered():
            return None
        if self._seccomp_file is None or not self._seccomp_file.exists():
            code = seccomp.program(seccomp.host_arch())
            assert code is not None
            path = self.private_dir() / "seccomp.bpf"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(code)
            self._seccomp_file = path
        return self._seccomp_file

    def _bwrap_args(self, env: Mapping[str, str], extra: Sequence[Bind] = ()) -> list[str]:
        cfg = self.config
        assert self.bwrap
        # The sandbox root is bubblewrap's own tmpfs with the host's top-level entries bound
        # read-only into it (rather than `--ro-bind / /`), so that bind destinations that do
        # not exist on the host (/mnt/data, /task ...) can still be created; it is made
        # read-only again at the end.
        args: list[str] = []
        cow = cfg.writable_root
        if cow:  # rootfs.py built it (command() names it just before this call)
            assert self._root_mount is not None
            args += ["--bind", str(self._root_mount / "root"), "/"]
            if os.path.isdir("/sys"):  # not in the overlays (rootfs.SKIPPED): read-only, as before
                args += ["--ro-bind", "/sys", "/sys"]
        else:
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
        hidden = self.hidden_paths()
        binds: list[tuple[str, str, str]] = []  # (flag, host, inside)
        for spec in cfg.ro_binds:
            host, inside = cfg.split_bind(spec)
            binds.append(("--ro-bind", os.path.realpath(host), inside))
        for spec in cfg.rw_binds:
            host, inside = cfg.split_bind(spec)
            binds.append(("--bind", os.path.realpath(host), inside))
        binds.append(("--bind", str(self.workspace), cfg.workspace_mount))
        for host, inside, writable in extra:
            binds.append(("--bind" if writable else "--ro-bind", host, inside))
        if not cow:  # a writable root can hold any mount point
            args += _open_up([inside for _, _, inside in binds], hidden)
        for real in sorted(hidden):
            if os.path.isdir(real):
                args += ["--tmpfs", real]
            elif not cow:  # rootfs.py put a stand-in in the root's upper layer
                args += ["--ro-bind", "/dev/null", real]
        # Bring back what the interpreter needs from hidden directories and /tmp, read-only.
        for p in rebound_folders(self.python, hidden):
            args += ["--ro-bind", p, p]
        for flag, host, inside in binds:
            args += [flag, host, inside]
        args += ["--dir", SANDBOX_HOME] + ([] if cow else ["--remount-ro", "/"])
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", HOSTNAME,
                 "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if self.as_pid_1:
            args.append("--as-pid-1")
        if cow and os.geteuid() == 0:
            # rootfs.py's user namespace maps many ids (useradd, su) and allows no nested one.
            for cap in ROOT_CAPS:
                args += ["--cap-add", cap]
        elif _userns_ok(self.bwrap):
            args += ["--unshare-user", "--disable-userns"]
        if self._filtered():
            args += ["--seccomp", "4"]  # command() opens the filter's file as fd 4
        if not cfg.network:
            args.append("--unshare-net")
        args.append("--clearenv")
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--chdir", cfg.workspace_mount]
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
            assert self.bwrap
            userns = "no nested user namespaces" if _userns_ok(self.bwrap) else "nested user namespaces allowed"
            refused = _seccomp_refused(self.bwrap, seccomp.host_arch())
            filtered = ("seccomp filter (fallocate, io_uring, keyrings, bpf, userfaultfd, perf refused)"
                        if refused is None else f"NO seccomp filter ({refused})")
            root = (f"writable copy-on-write / ({cfg.root_size_mb} MiB, discarded at the end)"
                    if cfg.writable_root else "read-only /")
            where = (f"bubblewrap: {root}, private /tmp, {'host network' if cfg.network else 'no network'}, "
                     f"own PID namespace, no capabilities, {userns}, {filtered}, "
                     f"workspace at {cfg.workspace_mount}")
        else:
            where = "NO SANDBOX (--unsafe-no-sandbox): resource limits only"
        return f"{where}; limits: {', '.join(limits) or 'none'}"

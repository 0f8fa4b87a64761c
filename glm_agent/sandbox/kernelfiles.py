"""The files of one sandboxed kernel, kept where sandboxed code cannot reach them.

A session's runtime folder (0700, `glm-k-<pid>-*` in the temp dir) is never bound into the
sandbox. It holds the kernelspec, bubblewrap's argument files, the client's connection file
and the matplotlib font-list seed. The kernel's stderr goes to an anonymous memory file.
Each start gets a fresh `start-N/`:

    ipc/              bound read-write at /tmp/.kernel/ipc: the kernel binds its zmq sockets here
    kernel.json       the kernel's connection file (ip inside the sandbox), bound read-only at
                      /tmp/.kernel/connection.json; ipykernel only reads it, because its
                      contents already equal what it would write
    sockets/          hard links to the kernel's sockets: the client connects to these
    connection.json   the client's connection file (ip = sockets/k)

ipc/ is the only folder the sandbox can write. The host never opens anything in it: it
lstat()s the socket files it expects and hard-links them (link() does not follow symlinks),
so a symlink planted there is never followed, and a socket replaced later (the client
reconnects after a dropped connection) still leads to the kernel's socket.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Mapping

from glm_agent.sandbox.bwrap import Bind
from glm_agent.sandbox.hostdir import make_private_dir, remove_tree

__all__ = ["KernelFiles", "StartFiles", "LAUNCHER", "KERNEL_DIR", "MPL_DIR", "kernel_log", "log_tail"]

# Inside the sandbox, on its private /tmp.
KERNEL_DIR = "/tmp/.kernel"
MPL_DIR = "/tmp/.config/matplotlib"

# The kernel runs as `python -s -c LAUNCHER -f <connection file> ...`, not `-m
# ipykernel_launcher`: its cwd is the workspace, which sandboxed code writes, and the cwd
# comes first on sys.path at start. A file there named like something the kernel imports
# (ipykernel_launcher.py, zmq.py, traitlets.py ...) would replace it and break every later
# start in that workspace. So the cwd is off sys.path until the kernel is up, then appended,
# not prepended: the user's modules import, and installed ones are not shadowed.
# Each output message is also kept to about 1 MiB: ipykernel batches all output of 0.2 s
# into one message, and serializing 100 MB at once takes several times that in memory (in
# the kernel, under its memory limit, and in the host process that receives it).
# No `{name}` braces here: jupyter_client substitutes those in a kernelspec's argv.
LAUNCHER = """\
import sys
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
import os
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
app.initialize(sys.argv[1:])
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
sys.path.append(os.getcwd())
try:
    from ipykernel.iostream import OutStream
except ImportError:
    OutStream = None
if OutStream is not None and hasattr(OutStream, 'flush'):
    def _bounded_write(self, text, _write=OutStream.write):
        n = _write(self, text)
        self._glm_pending = getattr(self, '_glm_pending', 0) + len(text)
        if self._glm_pending > 1 << 20:
            self._glm_pending = 0
            self.flush()
        return n
    OutStream.write = _bounded_write
del OutStream
app.start()
"""

KERNEL_ARGS = ["--HistoryManager.enabled=False", "--InteractiveShellApp.ignore_cwd=True"]

_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class StartFiles:
    """The per-start folder of one kernel start (see the module docstring)."""

    def __init__(self, path: Path, isolated: bool):
        self.path = path
        self.ipc = path / "ipc"
        self.sockets = path / "sockets"
        self.host_connection = path / "connection.json"
        self.kernel_connection = path / "kernel.json"
        self.isolated = isolated
        for folder in (self.ipc, self.sockets):
            folder.mkdir(mode=0o700)
        self._wanted: dict[str, bool] = {}

    @property
    def ipc_inside(self) -> str:
        return f"{KERNEL_DIR}/ipc" if self.isolated else str(self.ipc)

    @property
    def connection_inside(self) -> str:
        return f"{KERNEL_DIR}/connection.json" if self.isolated else str(self.kernel_connection)

    @property
    def client_ip(self) -> str:
        return str(self.sockets / "k")

    def binds(self) -> list[Bind]:
        return [(str(self.ipc), self.ipc_inside, True),
                (str(self.kernel_connection), self.connection_inside, False)]

    def write_kernel_connection(self, info: Mapping[str, Any]) -> None:
        """The kernel's copy of the connection info, with the ip it sees."""
        from jupyter_client.connect import write_connection_file

        ports = {name: info[name] for name in _PORTS}
        key = info["key"]
        write_connection_file(
            str(self.kernel_connection), ip=f"{self.ipc_inside}/k", transport="ipc",
            key=key if isinstance(key, bytes) else str(key).encode(),
            signature_scheme=info.get("signature_scheme", "hmac-sha256"),
            kernel_name=info.get("kernel_name", ""), **ports,
        )
        self._wanted = {f"k-{info[name]}": False for name in _PORTS}

    def link_sockets(self) -> bool:
        """Hard-link the kernel's sockets that exist by now into sockets/; True once all are.

        Only a socket (lstat, no symlink) is linked, and link() does not follow links."""
        for name, done in self._wanted.items():
            if done:
                continue
            try:
                if not stat.S_ISSOCK(os.lstat(self.ipc / name).st_mode):
                    continue
                os.link(self.ipc / name, self.sockets / name, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError:
                continue
            # What was linked is what the client will use: check the link itself.
            try:
                linked = stat.S_ISSOCK(os.lstat(self.sockets / name).st_mode)
            except OSError:
                linked = False
            if linked:
                self._wanted[name] = True
            else:
                _unlink(self.sockets / name)
        return bool(self._wanted) and all(self._wanted.values())

    def remove(self) -> None:
        remove_tree(self.path)


class KernelFiles:
    """The host-only runtime folder of one kernel session."""

    def __init__(self, isolated: bool):
        self.root = make_private_dir("k")
        self.isolated = isolated
        self._starts = 0
        self._current: StartFiles | None = None
        self._seed: list[Path] | None = None

    @property
    def sandbox_dir(self) -> Path:
        """Where the Sandbox keeps bubblewrap's argument files."""
        return self.root / "sandbox"

    @property
    def ipython_dir(self) -> str:
        return "/tmp/.ipython" if self.isolated else str(self.root / "ipython")

    @property
    def mpl_dir(self) -> str:
        return MPL_DIR if self.isolated else str(self.root / "mpl")

    def new_start(self) -> StartFiles:
        """A fresh start folder; the previous one is removed."""
        self.end_start()
        self._starts += 1
        path = self.root / f"start-{self._starts}"
        path.mkdir(mode=0o700)
        self._current = StartFiles(path, self.isolated)
        return self._current

    def end_start(self) -> None:
        if self._current is not None:
            self._current.remove()
            self._current = None

    def mpl_binds(self) -> list[Bind]:
        """The font-list seed, bound read-only into the kernel's matplotlib config folder."""
        seed = self._mpl_seed()
        if not self.isolated:
            return []
        return [(str(p), f"{MPL_DIR}/{p.name}", False) for p in seed]

    def _mpl_seed(self) -> list[Path]:
        """A copy of the host's matplotlib font list, made once per session.

        Building matplotlib's font cache takes 0.5 s or more on every first plot of every
        session otherwise. matplotlib rebuilds the list itself if a font in it is missing
        (and, the seed being read-only, keeps the new list in memory only).
        """
        if self._seed is None:
            target = self.root / "mpl"
            target.mkdir(mode=0o700, exist_ok=True)
            self._seed = []
            candidates = [os.environ.get("MPLCONFIGDIR", ""),
                          os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                       "matplotlib"),
                          os.path.expanduser("~/.matplotlib")]
            for folder in candidates:
                if not folder or not os.path.isdir(folder):
                    continue
                for name in sorted(os.listdir(folder)):
                    if name.startswith("fontlist-") and name.endswith(".json") and not (target / name).exists():
                        try:
                            shutil.copyfile(os.path.join(folder, name), target / name)
                        except OSError:
                            continue
                        self._seed.append(target / name)
        return self._seed

    def remove(self) -> None:
        self._current = None
        remove_tree(self.root)


def kernel_log() -> int:
    """A descriptor for the kernel's stderr: an anonymous memory file, so that no path to it
    exists (not even in the sandbox's /proc/<pid>/fd)."""
    if hasattr(os, "memfd_create"):
        try:
            return os.memfd_create("glm-kernel-log", os.MFD_CLOEXEC)
        except OSError:
            pass
    return os.dup(tempfile.TemporaryFile().fileno())


def log_tail(fd: int | None, limit: int = 2000) -> str:
    if fd is None:
        return ""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, limit, max(0, size - limit)).decode(errors="replace")
    except OSError:
        return ""


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

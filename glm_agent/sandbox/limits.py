"""Resource limits: rlimits through `prlimit`, and a pids cgroup where rlimits fall short.

RLIMIT_NPROC does not bind processes whose real uid is root, so when we run as root a
fork bomb is contained by a pids cgroup instead (v1 `pids` hierarchy, or a cgroup v2 tree
with the pids controller enabled). Without either, the limit is best effort and
`Sandbox.describe()` says so.

The rlimits are set inside the sandbox, after bubblewrap has dropped every capability, so
sandboxed code cannot raise them again (that needs CAP_SYS_RESOURCE), nor leave its pids
cgroup (joined before bubblewrap starts; the cgroup file system is read-only inside).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.procs import kill_pids, pid_alive

__all__ = ["rlimit_argv", "PidsCgroup", "pids_cgroup_root"]

_MB = 1024 * 1024


def rlimit_argv(config: SandboxConfig) -> list[str]:
    """`prlimit --as=.. --nproc=.. -- ` (prlimit execs the command, so no extra process)."""
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    args = [prlimit]
    if config.memory_mb:
        args.append(f"--as={config.memory_mb * _MB}")
    if config.nprocs:
        args.append(f"--nproc={config.nprocs}")
    if config.cpu_seconds:
        args.append(f"--cpu={config.cpu_seconds}")
    if config.file_size_limit_mb:  # file_size_mb, capped at the workspace quota
        args.append(f"--fsize={config.file_size_limit_mb * _MB}")
    if len(args) == 1:
        return []
    return args + ["--"]


def pids_cgroup_root() -> Path | None:
    """A directory under which we may create pids cgroups, or None."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return v1 / "glm-agent"
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in own:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            # A v2 cgroup with processes in it cannot have children with controllers,
            # except the root; only use trees that already delegate pids to children.
            if "pids" in enabled and os.access(base, os.W_OK):
                return base / "glm-agent"
    return None


class PidsCgroup:
    """One pids cgroup per sandbox: caps its tasks, and lists them for a sure kill."""

    def __init__(self, root: Path, max_pids: int):
        self.root = root
        self.path = root / f"{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.max_pids = max_pids

    @classmethod
    def create(cls, max_pids: int | None) -> "PidsCgroup | None":
        if not max_pids:
            return None
        root = pids_cgroup_root()
        if root is None:
            return None
        try:
            root.mkdir(exist_ok=True)
            _sweep_stale(root)
            group = cls(root, max_pids)
            group.path.mkdir()
            (group.path / "pids.max").write_text(str(max_pids))
        except OSError:
            return None
        return group

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def enter_argv(self) -> list[str]:
        """Argv prefix that moves the command into this cgroup, then execs it."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.procs_file]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def current(self) -> int:
        """Tasks (processes and threads) in the cgroup now."""
        try:
            return int((self.path / "pids.current").read_text())
        except (OSError, ValueError):
            return 0

    def kill_all(self, wait: float = 2.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids()
            if not pids:
                return
            kill_pids(pids)
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _sweep_stale(root: Path) -> None:
    """Remove empty cgroups left by processes that died without cleaning up."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        owner = entry.name.split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid() or pid_alive(int(owner)):
            continue
        try:
            if not (entry / "cgroup.procs").read_text().strip():
                entry.rmdir()
        except OSError:
            pass

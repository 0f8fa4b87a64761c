"""SandboxConfig: what a sandboxed process may use and see.

One frozen value shared by the kernel and the shell so that both tools of a session run
under the same rules. Limits are per sandbox (one kernel, or one shell command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["SandboxConfig", "WORKSPACE_MOUNT"]

# GLM-4's system prompt tells the model that `/mnt/data` persists its files.
WORKSPACE_MOUNT = "/mnt/data"


def _default_hidden() -> tuple[str, ...]:
    # Home directories hold keys, tokens and shell history; /run holds host sockets that a
    # network namespace does not cover (unix sockets live in the file system).
    home = os.path.expanduser("~")
    # The password files' backups ("-") hold the same hashes.
    paths = [home, "/root", "/home", "/run", "/var/run", "/etc/shadow", "/etc/gshadow", "/etc/shadow-",
             "/etc/gshadow-", "/etc/ssh"]
    return tuple(dict.fromkeys(paths))


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and visibility for sandboxed code.

    Attributes:
        memory_mb: address-space limit (RLIMIT_AS); allocations beyond raise MemoryError.
        cpu_seconds: CPU-time limit of one sandboxed process over its life (RLIMIT_CPU).
        file_size_mb: largest file the code may write (RLIMIT_FSIZE, capped at the workspace quota).
        nprocs: processes + threads the sandbox may hold (pids cgroup and RLIMIT_NPROC).
        timeout: default wall-clock seconds for one execution / command.
        network: keep the host network (False: own empty network namespace).
        ro_binds / rw_binds: extra host paths made visible, as "path" or "host:sandbox".
        hidden: host paths replaced by empty directories (or /dev/null for files).
        tmp_size_mb: size of the private /tmp.
        env: extra environment variables for sandboxed code.
        workspace_quota_mb / workspace_max_files: most the workspace may hold (disk blocks, and
            entries of any kind); code that goes over is stopped. None: no limit.
        unsafe_no_sandbox: run without namespaces (resource limits only) when bubblewrap is
            missing. Sandboxed code can then read and write everything the user can.
        writable_root: give the sandbox a writable copy-on-write root that starts as the
            host's and is thrown away when the sandbox ends (see rootfs.py); root inside keeps
            most capabilities a container's root has (chown, setuid ...) in its own user
            namespace, so `useradd` and installs into /usr/local work. Off: read-only root.
        root_size_mb: the most a writable root may take (a tmpfs), changes to it included.
    """

    memory_mb: int | None = 4096
    cpu_seconds: int | None = 3600
    file_size_mb: int | None = 1024
    nprocs: int | None = 256
    timeout: float = 60.0
    network: bool = False
    ro_binds: tuple[str, ...] = ()
    rw_binds: tuple[str, ...] = ()
    hidden: tuple[str, ...] = field(default_factory=_default_hidden)
    tmp_size_mb: int = 512
    env: tuple[tuple[str, str], ...] = ()
    workspace_mount: str = WORKSPACE_MOUNT
    unsafe_no_sandbox: bool = False
    workspace_quota_mb: int | None = 2048
    workspace_max_files: int | None = 100_000
    writable_root: bool = False
    root_size_mb: int = 1024

    def __post_init__(self) -> None:
        # Accept lists and dicts from callers; store hashable tuples.
        for name in ("ro_binds", "rw_binds", "hidden"):
            value = getattr(self, name)
            if isinstance(value, (str, Path)):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        env = self.env
        if isinstance(env, dict):
            env = tuple(env.items())
        object.__setattr__(self, "env", tuple((str(k), str(v)) for k, v in env))
        for name in ("memory_mb", "cpu_seconds", "file_size_mb", "nprocs", "workspace_quota_mb",
                     "workspace_max_files"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be positive or None, got {value!r}")
        if self.root_size_mb <= 0:
            raise ValueError(f"SandboxConfig.root_size_mb must be positive, got {self.root_size_mb!r}")
        if self.timeout <= 0:
            raise ValueError(f"SandboxConfig.timeout must be positive, got {self.timeout!r}")
        if not self.workspace_mount.startswith("/"):
            raise ValueError("SandboxConfig.workspace_mount must be an absolute path")

    @property
    def file_size_limit_mb(self) -> int | None:
        """RLIMIT_FSIZE in MiB: no single file may be larger than the workspace quota."""
        sizes = [v for v in (self.file_size_mb, self.workspace_quota_mb) if v is not None]
        return min(sizes) if sizes else None

    def with_(self, **changes: object) -> "SandboxConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    @staticmethod
    def split_bind(spec: str) -> tuple[str, str]:
        """`"host"` or `"host:sandbox"` -> (host, sandbox)."""
        host, sep, inside = spec.partition(":")
        return (host, inside) if sep and inside else (host, host)

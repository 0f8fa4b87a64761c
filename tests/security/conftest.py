"""Shared pieces of the sandbox security tests: the host files hostile code aims at, the tools
under test (kernels from the root conftest), and a way to run a sandboxed shell script as an unprivileged user.

Targets are real host paths of several kinds (an existing file, a new file, a file in /etc,
a file in the user's home), so that a test fails whichever of them an attack reaches; they
are removed afterwards even when an attack did reach them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.sandbox import (
    Sandbox,
    SandboxConfig,
    bwrap_available,
    run_command,
)

ORIGINAL = "original host content\n"


class HostTargets:
    """Host files sandboxed code must never create or change."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        # /var/tmp, not /tmp: the sandbox's private /tmp would hide /tmp even from code that
        # held every capability, and these targets must be reachable by a broken sandbox.
        self.folder = Path(tempfile.mkdtemp(prefix=f"glm-sec-{tag}-", dir="/var/tmp"))
        self.existing = self.folder / "existing.txt"
        self.existing.write_text(ORIGINAL)
        self.new = self.folder / "new.txt"
        self.etc = Path("/etc") / f"glm-sec-{tag}"
        self.home = Path(os.path.expanduser("~")) / f".glm-sec-{tag}"
        self.all = {"existing": self.existing, "new": self.new, "etc": self.etc, "home": self.home}
        # Folders for links that a careless cleanup would walk into: one here, one in the home.
        self.home_folder = Path(os.path.expanduser("~")) / f".glm-sec-{tag}-folder"
        self.home_folder.mkdir()
        (self.home_folder / "keep.txt").write_text(ORIGINAL)

    def problems(self) -> list[str]:
        """What an attack did to the targets (empty: nothing)."""
        out = []
        if not self.existing.is_file() or self.existing.is_symlink() or self.existing.read_text() != ORIGINAL:
            out.append(f"{self.existing} was changed")
        for path in (self.new, self.etc, self.home):
            if os.path.lexists(path):
                out.append(f"{path} was created")
        if not (self.home_folder / "keep.txt").is_file():
            out.append(f"{self.home_folder} was emptied")
        return out

    def cleanup(self) -> None:
        for path in (self.etc, self.home):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                path.unlink()
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.home_folder, ignore_errors=True)


@pytest.fixture
def targets():
    t = HostTargets()
    yield t
    t.cleanup()


@pytest.fixture
def ws(tmp_path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def tool_config() -> SandboxConfig:
    """The sandbox of the `python` and `shell` tool fixtures; a module overrides it."""
    return SandboxConfig(memory_mb=1024, nprocs=64, timeout=30)


@pytest.fixture
async def python(ws, tool_config):
    """python(code) runs `code` through the real python tool on `ws`."""
    from glm_agent.tools.python import PythonTool

    tool = PythonTool(sandbox=tool_config, timeout=30, interrupt_grace=3)

    async def run(code: str):
        return await tool.call({"code": code}, ToolContext(session_id="security", workspace=ws))

    yield run
    await tool.aclose()


@pytest.fixture
def shell(ws, tool_config):
    """shell(command) runs `command` through the real shell tool on `ws`."""
    from glm_agent.tools.shell import ShellTool

    tool = ShellTool(sandbox=tool_config, timeout=30)

    async def run(command: str):
        return await tool.call({"command": command}, ToolContext(session_id="security", workspace=ws))

    yield run
    tool.close()  # its shell session and sandbox


@pytest.fixture
def sh():
    """The shell tool's path: sh(command, workspace, config, **kw) runs `run_command` in a
    fresh sandbox and returns its CommandResult."""
    def run(command: str, workspace: Path, config: SandboxConfig, **kw):
        return asyncio.run(run_command(command, workspace, config, **kw))
    return run


# -- an unprivileged user --------------------------------------------------------------

NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"


def unprivileged_reason() -> str | None:
    """Why a sandbox cannot be run as `nobody` here, or None."""
    if os.geteuid() != 0:
        return "needs root to switch to the nobody user"
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (the test python under /root is not readable by nobody)"
    return None


def run_unprivileged(script: str, workspace: Path, config: SandboxConfig) -> subprocess.CompletedProcess:
    """Run `script` with /bin/sh in our sandbox, with bubblewrap started as uid 65534.

    The command line comes from Sandbox.command(); setpriv goes right before bwrap, so that
    what bwrap reads (its argument file) is opened by root and everything from bwrap on runs
    as nobody. No pids cgroup (only root may join one). The interpreter is the system one:
    root's pyenv under /root (0700) is not usable by nobody.
    """
    box = Sandbox(config.with_(nprocs=None), workspace, python=SYSTEM_PYTHON)
    try:
        argv, env, cwd = box.command(["/bin/sh", "-c", script])
        i = argv.index(box.bwrap)
        argv[i:i] = [shutil.which("setpriv"), *NOBODY, "--"]
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    finally:
        box.close()


@pytest.fixture
def as_nobody():
    """as_nobody(script, config) runs `script` as uid 65534 (see run_unprivileged) in a
    workspace (as_nobody.workspace) nobody can enter (pytest's tmp_path sits below a 0700 folder); skips where
    that is impossible, saying why."""
    if not bwrap_available():
        pytest.skip("bubblewrap is not installed")
    reason = unprivileged_reason()
    if reason:
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="glm-sec-nobody-"))
    path.chmod(0o755)

    class AsNobody:
        workspace = path

        def __call__(self, script: str, config: SandboxConfig) -> subprocess.CompletedProcess:
            return run_unprivileged(script, path, config)

    yield AsNobody()
    shutil.rmtree(path, ignore_errors=True)

"""Sandboxed execution: bubblewrap namespaces + resource limits, Jupyter kernels, shell
sessions, and long-lived sandboxes (optionally with a writable copy-on-write root).

    from glm_agent.sandbox import KernelSession, SandboxConfig
    k = KernelSession(workspace, SandboxConfig(memory_mb=2048, timeout=30))
    result = await k.execute("print(1 + 1)")

    box = LiveSandbox(SandboxConfig(writable_root=True), workspace).start()
    result = await ShellSession(box).run("cd /tmp && ls", timeout=30)

Nothing here imports jupyter_client until a kernel starts.
"""

from glm_agent.sandbox.bwrap import Sandbox, bwrap_available, check_bwrap, find_bwrap
from glm_agent.sandbox.config import WORKSPACE_MOUNT, SandboxConfig
from glm_agent.sandbox.errors import KernelStartError, SandboxError, SandboxUnavailableError
from glm_agent.sandbox.kernel import ExecutionResult, KernelSession, Output
from glm_agent.sandbox.session import LiveSandbox, SandboxStartError, ShellSession
from glm_agent.sandbox.shell import CommandResult, run_command

__all__ = [
    "SandboxConfig",
    "WORKSPACE_MOUNT",
    "Sandbox",
    "bwrap_available",
    "check_bwrap",
    "find_bwrap",
    "SandboxError",
    "SandboxUnavailableError",
    "KernelStartError",
    "KernelSession",
    "ExecutionResult",
    "Output",
    "CommandResult",
    "run_command",
    "LiveSandbox",
    "ShellSession",
    "SandboxStartError",
]

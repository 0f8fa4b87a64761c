"""Sandboxed execution: bubblewrap namespaces + resource limits, Jupyter kernels, shell.

    from glm_agent.sandbox import KernelSession, SandboxConfig
    k = KernelSession(workspace, SandboxConfig(memory_mb=2048, timeout=30))
    result = await k.execute("print(1 + 1)")

Nothing here imports jupyter_client until a kernel starts.
"""

from glm_agent.sandbox.bwrap import Sandbox, bwrap_available, check_bwrap, find_bwrap
from glm_agent.sandbox.config import WORKSPACE_MOUNT, SandboxConfig
from glm_agent.sandbox.errors import KernelStartError, SandboxError, SandboxUnavailableError
from glm_agent.sandbox.kernel import ExecutionResult, KernelSession, Output
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
]

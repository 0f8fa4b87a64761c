"""The `shell` tool: one bash command per call, sandboxed, in the session workspace.

State between calls is the files in the workspace (each command gets a fresh sandbox, as
`docker exec` does in AgentBench's OS tasks). `run_raw` runs setup commands in the same
kind of sandbox without going through the model (eval suites' init scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolResult
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.text import collapse_cr, strip_ansi, truncate_middle

__all__ = ["ShellTool"]


class ShellTool(Tool):
    """Run a bash command in a sandbox whose working directory is the session workspace."""

    name = "shell"
    description = (
        "Run a bash command in {workdir} and return its combined stdout and stderr plus the "
        "exit code. Files there persist between commands, nothing else does (each command "
        "starts a fresh shell). Commands are stopped after {timeout:g} seconds. {network}"
        "Stdin is empty, so do not run interactive programs."
    )
    parameters = {
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The bash command to run."}},
        "required": ["command"],
    }

    def __init__(
        self,
        sandbox: SandboxConfig | None = None,
        timeout: float | None = None,
        max_output_chars: int = 6000,
        *,
        workspace: str | Path | None = None,
        init: str | Sequence[str] | None = None,
        shell: str = "/bin/bash",
        unsafe_no_sandbox: bool = False,
    ):
        self.sandbox = sandbox or SandboxConfig()
        if unsafe_no_sandbox:  # the CLI's --unsafe-no-sandbox
            self.sandbox = self.sandbox.with_(unsafe_no_sandbox=True)
        self.exec_timeout = float(timeout if timeout is not None else self.sandbox.timeout)
        self.max_output_chars = max_output_chars
        self.workspace = Path(workspace) if workspace else None
        self.init = [init] if isinstance(init, str) else list(init or [])
        self.shell = shell
        self.timeout = self.exec_timeout + 15.0
        workdir = "the session's working directory" if self.sandbox.unsafe_no_sandbox else self.sandbox.workspace_mount
        offline = not self.sandbox.network and not self.sandbox.unsafe_no_sandbox
        self.description = type(self).description.format(
            workdir=workdir, timeout=self.exec_timeout, network="There is no network access. " if offline else "")
        self._initialized = False

    async def run_raw(
        self, command: str, *, workspace: str | Path | None = None, timeout: float | None = None,
        stdin: str | None = None,
    ) -> Any:
        """Run `command` in this tool's sandbox and return the `CommandResult` (no truncation
        for the model, no init scripts). Raises SandboxUnavailableError if there is no sandbox."""
        from glm_agent.sandbox.shell import run_command

        ws = Path(workspace) if workspace else self.workspace
        if ws is None:
            raise ValueError("ShellTool.run_raw needs a workspace (constructor or argument)")
        if self.workspace is None:
            self.workspace = ws
        return await run_command(command, ws, self.sandbox, timeout=self.exec_timeout if timeout is None else timeout,
                                 shell=self.shell, stdin=stdin)

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        from glm_agent.sandbox.errors import SandboxError

        command = arguments.get("command")
        if not isinstance(command, str) or not command.strip():
            return ToolResult(content='Error: `shell` needs a command string: {"command": "ls -la"}.', is_error=True)
        workspace = self.workspace or ctx.workspace
        try:
            if not self._initialized:
                self._initialized = True
                for script in self.init:
                    res = await self.run_raw(script, workspace=workspace)
                    if not res.ok:
                        return ToolResult(content=f"Error: the sandbox setup script failed (exit {res.exit_code}):\n"
                                                  f"{res.output[-2000:]}", is_error=True)
            result = await self.run_raw(command, workspace=workspace)
        except SandboxError as exc:
            return ToolResult(content=f"Error: the shell sandbox is not available: {exc}", is_error=True)
        text = collapse_cr(strip_ansi(result.output)).rstrip("\n")
        if result.timed_out:
            note = f"[Command timed out after {self.exec_timeout:g} s and was killed]"
        elif result.exit_code != 0 and not (result.quota_exceeded and (result.exit_code or 0) < 0):  # killed: said below
            note = f"[exit code: {result.exit_code}]"
        else:
            note = ""
        quota = f"[{result.notice}]" if result.notice else ""
        full = "\n".join(p for p in (text, note, quota) if p) or "(no output)"
        content, cut = truncate_middle(full, self.max_output_chars)
        return ToolResult(
            content=content,
            full_output=full if (cut or result.dropped_chars) else None,
            data={"exit_code": result.exit_code, "timed_out": result.timed_out,
                  "quota_exceeded": result.quota_exceeded,
                  "duration": round(result.duration, 4)},
        )

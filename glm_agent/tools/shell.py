"""The `shell` tool: a persistent bash session in a sandbox, in the session workspace.

One shell per tool instance (so per agent), started on first use in a long-lived sandbox
(`LiveSandbox`) and closed with the agent: `cd`, variables and functions persist between
commands, as in a terminal. Each command has a timeout (its processes are killed, the shell
goes on) and bounded output; a shell that dies is started again and the model is told.
`run_raw` runs a script as its own process in the same sandbox, without going through the
model (eval suites' setup and checks); `run_in_session` runs one in the model's shell.
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
    """Run bash commands in a persistent, sandboxed shell whose first working directory is
    the session workspace."""

    name = "shell"
    description = (
        "Run a bash command in a persistent shell session and return its combined stdout and "
        "stderr plus the exit code. The shell starts in {workdir}; the working directory, "
        "variables and functions persist between commands, and so do files. Commands are "
        "stopped after {timeout:g} seconds. {network}Stdin is empty, so do not run interactive programs."
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
        cwd: str | None = None,
        unsafe_no_sandbox: bool = False,
        box: Any = None,
    ):
        self.sandbox = sandbox or SandboxConfig()
        if unsafe_no_sandbox:  # the CLI's --unsafe-no-sandbox
            self.sandbox = self.sandbox.with_(unsafe_no_sandbox=True)
        self.exec_timeout = float(timeout if timeout is not None else self.sandbox.timeout)
        self.max_output_chars = max_output_chars
        self.workspace = Path(workspace) if workspace else None
        self.init = [init] if isinstance(init, str) else list(init or [])
        self.shell = shell
        self.cwd = cwd  # where the shell starts (default: the workspace as the sandbox sees it)
        # Room for killing a command that overran and restarting its shell.
        self.timeout = self.exec_timeout + 15.0
        workdir = cwd or ("the session's working directory" if self.sandbox.unsafe_no_sandbox
                          else self.sandbox.workspace_mount)
        offline = not self.sandbox.network and not self.sandbox.unsafe_no_sandbox
        self.description = type(self).description.format(
            workdir=workdir, timeout=self.exec_timeout, network="There is no network access. " if offline else "")
        self._initialized = False
        # A LiveSandbox shared with its owner (an eval task's machine), who closes it.
        self._box: Any = box
        self._owns_box = box is None
        self._session: Any = None
        if box is not None:
            self.workspace = box.workspace

    # -- the sandbox and the session ------------------------------------------------------

    def _live(self, workspace: str | Path | None) -> Any:
        """The tool's long-lived sandbox (made on first use, on the first workspace given)."""
        from glm_agent.sandbox.session import LiveSandbox, ShellSession

        if self._box is None:
            ws = Path(workspace) if workspace else self.workspace
            if ws is None:
                raise ValueError("ShellTool needs a workspace (constructor or argument)")
            self.workspace = ws
            self._box = LiveSandbox(self.sandbox, ws)
        if self._session is None:
            self._session = ShellSession(self._box, shell=self.shell, cwd=self.cwd)
        return self._box

    async def run_raw(
        self, command: str, *, workspace: str | Path | None = None, timeout: float | None = None,
        stdin: str | None = None, args: Sequence[str] = (), cwd: str | None = None,
    ) -> Any:
        """Run `command` as its own `bash -c` process in this tool's sandbox (same machine as
        the session, fresh shell state) and return its `CommandResult`: no truncation for the
        model, no init scripts. Raises SandboxError if there is no sandbox."""
        import asyncio

        box = self._live(workspace)
        if not box.alive:
            await asyncio.to_thread(box.start)
        return await box.execute([self.shell, "-c", command, "script", *args], stdin=stdin,
                                 timeout=self.exec_timeout if timeout is None else timeout,
                                 cwd=cwd or self.cwd)

    async def run_in_session(self, command: str, *, workspace: str | Path | None = None,
                             timeout: float | None = None, stdin: bool = False) -> Any:
        """Run `command` in the model's shell session (its `cd` and variables stay) and
        return the `CommandResult`. `stdin`: it may read the session's input, so that e.g.
        `su - user` turns the session into that user's shell."""
        self._live(workspace)
        return await self._session.run(command, timeout=self.exec_timeout if timeout is None else timeout,
                                       stdin=stdin)

    async def aclose(self) -> None:
        # On a machine shared with its owner (an eval task), the session lives as long as the
        # machine: the judge's checks run after the agent, with the agent's shell still there.
        if self._owns_box:
            self.close()

    def close(self) -> None:
        """`aclose` for synchronous callers."""
        if self._session is not None:
            self._session.close()
        if self._box is not None and self._owns_box:
            self._box.close()
            self._box = None
        self._session = None

    # -- the tool -------------------------------------------------------------------------

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
            result = await self.run_in_session(command, workspace=workspace)
        except SandboxError as exc:
            return ToolResult(content=f"Error: the shell sandbox is not available: {exc}", is_error=True)
        text = collapse_cr(strip_ansi(result.output)).rstrip("\n")
        if result.timed_out:
            note = f"[Command timed out after {self.exec_timeout:g} s and was killed]"
        elif result.exit_code != 0 and not (result.quota_exceeded and (result.exit_code or 0) < 0):  # killed: said below
            note = f"[exit code: {result.exit_code}]"
        else:
            note = ""
        notice = f"[{result.notice}]" if result.notice else ""
        full = "\n".join(p for p in (text, note, notice) if p) or "(no output)"
        content, cut = truncate_middle(full, self.max_output_chars)
        return ToolResult(
            content=content,
            full_output=full if (cut or result.dropped_chars) else None,
            data={"exit_code": result.exit_code, "timed_out": result.timed_out,
                  "quota_exceeded": result.quota_exceeded, "restarted": result.restarted,
                  "duration": round(result.duration, 4)},
        )

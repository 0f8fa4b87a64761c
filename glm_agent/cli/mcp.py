"""MCP on the command line: `--mcp` servers for `chat` / `run`, and `glm-agent mcp serve`.

`attach_mcp_servers` starts the servers named by `--mcp` (and those of `<home>/mcp.json`)
before the chat starts and gives their tools to the agent; `agent.aclose()` stops them.
`glm-agent mcp serve --tools python,browser` is the other direction: our tools, served to
other MCP clients over stdio. The MCP SDK is imported only when one of these runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer

from glm_agent.cli.errors import command_group, fail

if TYPE_CHECKING:
    from glm_agent.agent.loop import Agent
    from glm_agent.tools.mcp import MCPServers

__all__ = ["app", "attach_mcp_servers", "config_path", "serve"]

app = command_group(
    name="mcp",
    help="Model Context Protocol: serve glm-agent's tools to other MCP clients.",
    no_args_is_help=True,
)


def config_path() -> Path:
    """The `mcpServers` file every chat and run reads: <home>/mcp.json."""
    from glm_agent.agent.session import default_home

    return default_home() / "mcp.json"


def attach_mcp_servers(agent: "Agent", specs: Sequence[str], *, sandbox: bool = False) -> None:
    """Start the servers of `specs` (`--mcp` values) and of <home>/mcp.json, give their tools
    to `agent`, and say on stderr which tools came from where. A server that does not start is
    a bad `--mcp` value (typer.BadParameter), before the chat begins."""
    if not specs and not config_path().is_file():
        return  # the usual case: nothing to import
    from glm_agent.tools.mcp import MCPConfigError, MCPServerError, MCPServers, MCPUnavailableError, load_config
    from glm_agent.tools.mcp.config import server_configs

    try:
        configs = load_config(config_path()) + server_configs(specs)
    except MCPConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mcp") from None
    if not configs:
        return
    servers = MCPServers(*configs, reserved=agent.tools, workspace=lambda: agent.workspace, sandbox=sandbox)
    try:
        servers.start_sync()
    except (MCPServerError, MCPUnavailableError) as exc:
        from glm_agent.core.terminal import safe_text

        raise typer.BadParameter(safe_text(exc), param_hint="--mcp") from None
    servers.attach(agent)
    if not servers.tools:  # nothing in the agent would close them
        servers.close()
    _report(servers)


def _report(servers: "MCPServers") -> None:
    from glm_agent.core.terminal import safe_text

    for server in servers.describe():
        names = ", ".join(server["tools"]) or "no tools"
        typer.echo(safe_text(f"{server['origin']}: {names}"), err=True)
    for skipped in servers.skipped:
        typer.echo(safe_text(f"warning: left out {skipped}"), err=True)


@app.command("serve")
def serve(
    tools: str = typer.Option("python", "--tools", "-t", help="Comma-separated tools to serve: python, shell, browser, image."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Folder the tools work in (default: a new session folder)."),
    unsafe_no_sandbox: bool = typer.Option(
        False, "--unsafe-no-sandbox", help="Run python/shell without bubblewrap (resource limits only)."),
    workspace_quota_mb: int = typer.Option(
        2048, "--workspace-quota-mb", min=0, help="Most MiB python/shell code may keep in the workspace (0: no limit)."),
) -> None:
    """Serve glm-agent's sandboxed tools as an MCP server over stdio (for other MCP clients)."""
    import secrets
    import time

    from glm_agent.agent.session import sessions_root
    from glm_agent.cli.build import build_tools
    from glm_agent.cli.options import AgentOptions
    from glm_agent.tools.mcp import MCPUnavailableError
    from glm_agent.tools.mcp.connection import require_sdk

    try:
        require_sdk()
    except MCPUnavailableError as exc:
        raise fail(str(exc), 1) from None
    options = AgentOptions(tools=tools, unsafe_no_sandbox=unsafe_no_sandbox, workspace_quota_mb=workspace_quota_mb)
    built = build_tools(options)
    if not built:
        raise typer.BadParameter("no tools to serve", param_hint="--tools")
    folder = workspace or sessions_root() / (time.strftime("mcp-%Y%m%d-%H%M%S-") + secrets.token_hex(3))
    folder.mkdir(parents=True, exist_ok=True)
    from glm_agent.tools.mcp.export import serve_stdio

    try:
        asyncio.run(serve_stdio(built, folder))
    except KeyboardInterrupt:
        pass

"""`MCPTool`: one tool of an MCP server, as a glm-agent `Tool`.

Its name, description and JSON schema are the server's (the name prefixed with the server's
name when it clashes with another tool); a call goes to the server through the group that
owns the connection (`servers.py`). Closing any of a group's tools closes the group: the
agent closes all of its tools together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolResult

if TYPE_CHECKING:
    from glm_agent.tools.mcp.servers import MCPServers

__all__ = ["MCPTool"]


class MCPTool(Tool):
    """A tool served by an MCP server. `server` names the server, `mcp_name` is the tool's own
    name there, `origin` says where it runs (shown by the chat's /tools)."""

    def __init__(self, group: "MCPServers", *, server: str, mcp_name: str, name: str, description: str,
                 parameters: dict[str, Any], timeout: float):
        self.group = group
        self.server = server
        self.mcp_name = mcp_name
        self.name = name
        self.description = description
        self.parameters = parameters
        self.timeout = timeout
        self.available = True  # False once the server no longer lists it

    @property
    def origin(self) -> str:
        return self.group.origin(self.server)

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.group.call(self, arguments, ctx)

    async def aclose(self) -> None:
        await self.group.aclose()

    def __repr__(self) -> str:
        return f"<MCPTool {self.name!r} of {self.server!r}>"

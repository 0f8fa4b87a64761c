"""Model Context Protocol: MCP servers as tools, and glm-agent's tools as an MCP server.

    from glm_agent.tools.mcp import mcp_tools
    agent = Agent(model, tools=[*await mcp_tools("python -m files_server")])

Built on the official `mcp` SDK (`pip install "glm-agent[mcp]"`), which is imported only when
a server starts. A stdio server runs with the user's rights unless it is sandboxed
(`sandbox=True`: the session workspace only, no network). `tool_server` / `serve_stdio` serve
glm-agent's own tools to other MCP clients (`glm-agent mcp serve`).
"""

from __future__ import annotations

from glm_agent.tools.mcp.config import MCPConfigError, MCPServerConfig, load_config, parse_server, server_configs
from glm_agent.tools.mcp.connection import MCPServerError, MCPUnavailableError
from glm_agent.tools.mcp.export import serve_stdio, tool_server
from glm_agent.tools.mcp.servers import MCPServers, mcp_tools, schema_problem
from glm_agent.tools.mcp.tool import MCPTool

__all__ = [
    "MCPServers",
    "MCPTool",
    "MCPServerConfig",
    "MCPConfigError",
    "MCPServerError",
    "MCPUnavailableError",
    "mcp_tools",
    "parse_server",
    "load_config",
    "server_configs",
    "schema_problem",
    "serve_stdio",
    "tool_server",
]

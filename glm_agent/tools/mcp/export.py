"""glm-agent's own tools as an MCP server (`glm-agent mcp serve`), on the official SDK's
low-level `Server`: other MCP clients list our tools and call them over stdio.

Each call runs the tool as an agent would, in one session workspace; the observation goes
back as text, image attachments as image content. A tool's failure is an error result, never
the end of the server.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any, Sequence

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolResult

__all__ = ["tool_server", "serve_stdio"]

_MAX_IMAGE_BYTES = 8 * 1024 * 1024  # a bigger attachment is named, not sent


def _content(result: ToolResult) -> list[Any]:
    from mcp.types import ImageContent, TextContent

    blocks: list[Any] = [TextContent(type="text", text=result.content)]
    for attachment in result.attachments:
        path = Path(attachment.path)
        if attachment.mime.startswith("image/"):
            try:
                size = path.stat().st_size
                if size <= _MAX_IMAGE_BYTES:
                    data = base64.b64encode(path.read_bytes()).decode("ascii")
                    blocks.append(ImageContent(type="image", data=data, mime_type=attachment.mime))
                    continue
            except OSError:
                pass
        blocks.append(TextContent(type="text", text=f"[file: {path}]"))
    return blocks


def tool_server(tools: Sequence[Tool], workspace: Path, *, name: str = "glm-agent") -> Any:
    """An SDK `Server` that lists `tools` and runs their calls in `workspace`."""
    from mcp.server.lowlevel import Server
    from mcp.types import CallToolResult, ListToolsResult, TextContent
    from mcp.types import Tool as MCPToolInfo

    table = {t.name: t for t in tools}
    locks = {t.name: asyncio.Lock() for t in tools}  # a kernel or a browser runs one call at a time
    ctx = ToolContext(session_id="mcp", workspace=workspace)

    async def list_tools(_ctx: Any, _params: Any) -> Any:
        return ListToolsResult(tools=[
            MCPToolInfo(name=t.name, description=t.description, input_schema=t.parameters) for t in tools])

    async def call_tool(_ctx: Any, params: Any) -> Any:
        tool = table.get(params.name)
        if tool is None:
            known = ", ".join(table) or "none"
            return CallToolResult(content=[TextContent(type="text", text=f"Error: no tool {params.name!r} "
                                                                         f"(tools: {known})")], is_error=True)
        try:
            async with locks[tool.name]:
                result = await tool.call(dict(params.arguments or {}), ctx)
        except Exception as exc:  # noqa: BLE001 - a tool bug is the client's observation, not our exit
            result = ToolResult(content=f"Error: {type(exc).__name__}: {exc}", is_error=True)
        return CallToolResult(content=_content(result), is_error=result.is_error)

    from glm_agent.tools.mcp.connection import client_version

    return Server(name, version=client_version(), on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(tools: Sequence[Tool], workspace: Path) -> None:
    """Serve `tools` over this process's stdin/stdout until the client hangs up; the tools
    are closed at the end."""
    from mcp.server.stdio import stdio_server

    server = tool_server(tools, workspace)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await asyncio.gather(*(t.aclose() for t in tools), return_exceptions=True)

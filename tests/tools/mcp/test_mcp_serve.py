"""`glm-agent mcp serve`: our sandboxed tools, driven by the MCP SDK's own client over stdio."""

from __future__ import annotations

import base64
import sys

import pytest

pytest.importorskip("mcp")


def _serve(tools: str, workspace):
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

    try:
        check_bwrap()
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "glm_agent", "mcp", "serve", "--tools", tools, "--workspace", str(workspace)],
        cwd=str(workspace),
    )
    return stdio_client(params)


async def test_the_sdk_client_lists_and_calls_our_tools(tmp_path):
    from mcp import Client

    async with Client(_serve("shell", tmp_path)) as client:
        assert client.server_info.name == "glm-agent"
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == ["shell"]
        assert listed[0].input_schema["type"] == "object"
        result = await client.call_tool("shell", {"command": "echo from-mcp > out.txt; cat out.txt; echo $$"})
        assert not result.is_error
        text = result.content[0].text
        assert "from-mcp" in text
        assert (tmp_path / "out.txt").read_text() == "from-mcp\n"  # the workspace is the given folder
        # The shell runs in the sandbox: the host's files outside the workspace are not there.
        escaped = await client.call_tool("shell", {"command": f"ls {tmp_path.parent} /root 2>&1 | head -3"})
        assert tmp_path.name not in escaped.content[0].text
        unknown = await client.call_tool("nope", {})
        assert unknown.is_error and "no tool 'nope'" in unknown.content[0].text


async def test_a_plot_comes_back_as_image_content(tmp_path):
    pytest.importorskip("jupyter_client")
    from mcp import Client

    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nprint(6 * 7)"
    async with Client(_serve("python", tmp_path)) as client:
        result = await client.call_tool("python", {"code": code})
    assert not result.is_error
    text, image = result.content
    assert "42" in text.text and "[Image saved: image-1.png]" in text.text
    assert image.type == "image" and image.mime_type == "image/png"
    assert base64.b64decode(image.data) == (tmp_path / "image-1.png").read_bytes()

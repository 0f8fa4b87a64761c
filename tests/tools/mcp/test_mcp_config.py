"""Which servers to start: `--mcp` strings and the `mcpServers` file other MCP clients use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mcp_helpers import SERVER

from glm_agent.core.contracts import ToolContext
from glm_agent.tools.mcp import MCPConfigError, MCPServers, load_config, parse_server
from glm_agent.tools.mcp.config import server_configs


def test_server_strings():
    stdio = parse_server("python -m files_server --root '/srv/my files'")
    assert stdio.argv == ["python", "-m", "files_server", "--root", "/srv/my files"]
    assert (stdio.transport, stdio.guessed_name()) == ("stdio", "files_server")
    named = parse_server("docs=http://127.0.0.1:8000/mcp")
    assert (named.name, named.url, named.transport) == ("docs", "http://127.0.0.1:8000/mcp", "http")
    with pytest.raises(MCPConfigError, match="command or a url"):
        parse_server({"command": "x", "url": "http://127.0.0.1/mcp"})
    with pytest.raises(MCPConfigError, match="empty MCP server"):
        parse_server("  ")


def test_the_mcp_servers_file(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "files": {"command": "python", "args": ["-m", "srv"], "env": {"ROOT": "/srv"}, "alwaysAllow": []},
        "web": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer x"}},
        "off": {"command": "nothing", "disabled": True},
    }}))
    files, web = load_config(path)
    assert (files.name, files.argv, dict(files.env)) == ("files", ["python", "-m", "srv"], {"ROOT": "/srv"})
    assert (web.name, web.url, dict(web.headers)) == ("web", "http://127.0.0.1:9/mcp", {"Authorization": "Bearer x"})
    assert load_config(tmp_path / "missing.json") == []
    assert [c.name for c in server_configs([str(path), "python -m other"])] == ["files", "web", None]
    for bad, message in [("{", "not valid JSON"), ('{"servers": {}}', '"mcpServers"'),
                         ('{"mcpServers": {"a": {"command": "x", "args": "-v"}}}', "`args` must be a list"),
                         ('{"mcpServers": {"a": {"url": "http://h/sse", "type": "sse"}}}', "SSE"),
                         ('{"mcpServers": {"a": {"command": "x", "timeout": -1}}}', "timeout")]:
        path.write_text(bad)
        with pytest.raises(MCPConfigError, match=message):
            load_config(path)


def test_a_sandboxed_server_sees_only_the_workspace(tmp_path):
    from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

    try:
        check_bwrap()
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the host's secret")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "inside.txt").write_text("shared")
    ctx = ToolContext(session_id="t", workspace=workspace)
    # The server's script sits in a private /tmp folder the sandbox hides: the script alone is
    # made visible, read-only, wherever the user keeps it.
    script = tmp_path / "servers" / SERVER.name
    script.parent.mkdir()
    script.write_bytes(SERVER.read_bytes())

    async def read_all(sandbox: bool, paths) -> list[str]:
        argv = [sys.executable, str(script), "files"]
        async with MCPServers(argv, sandbox=sandbox, workspace=workspace) as group:
            read = next(t for t in group.tools if t.name == "read")
            return [(await read.call({"path": str(p)}, ctx)).content for p in paths]

    def read_both(sandbox: bool):
        return read_all(sandbox, (secret, "inside.txt"))

    import asyncio

    assert asyncio.run(read_both(False))[0] == "the host's secret"
    hidden, shared = asyncio.run(read_both(True))
    assert "the host's secret" not in hidden and "cannot read" in hidden
    assert shared == "shared"
    sibling = script.with_name("sibling.txt")  # the script's folder stays hidden
    sibling.write_text("next to the script")
    (beside,) = asyncio.run(read_all(True, (sibling,)))
    assert "next to the script" not in beside and "cannot read" in beside


def test_the_cli_reads_the_home_mcp_json(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "mcp.json").write_text(json.dumps(
        {"mcpServers": {"calc": {"command": sys.executable, "args": [str(SERVER), "files"]}}}))
    turns = [{"content": "", "tool_calls": [{"name": "add", "arguments": {"a": 20, "b": 22}}]}, "ok"]
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(turns))
    env = {**os.environ, "GLM_AGENT_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "glm_agent", "run", "--tools", "", "-m", f"scripted:{script}", "--json",
         "--workspace", str(tmp_path / "ws"), "go"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MCP server `calc`" in proc.stderr
    assert '"42"' in proc.stdout or "42" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "glm_agent", "run", "--tools", "", "-m", f"scripted:{script}",
         "--mcp", str(tmp_path / "no-such-server"), "go"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert bad.returncode == 2
    assert "--mcp" in bad.stderr and "did not start" in bad.stderr and "Traceback" not in bad.stderr

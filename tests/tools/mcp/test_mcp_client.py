"""MCP servers as tools: real servers written with the SDK, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp_helpers import SERVER, alive, stdio, wait_gone

from glm_agent import Agent, tool
from glm_agent.core.contracts import ToolContext
from glm_agent.core.messages import ToolCall, ToolMessage
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.mcp import MCPServerError, MCPServers, mcp_tools


def _ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(session_id="t", workspace=tmp_path)


def _observations(agent: Agent) -> list[ToolMessage]:
    return [m for m in agent.history if isinstance(m, ToolMessage)]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_agent_lists_and_calls_mcp_tools(transport, http_server, tmp_path):
    server = stdio() if transport == "stdio" else http_server()
    tools = await mcp_tools(server)
    model = ScriptedModel([ToolCall(name="add", arguments={"a": 2, "b": 40}), ToolCall(name="picture"), "done"])
    agent = Agent(model, tools=tools, workspace=tmp_path)
    try:
        result = await agent.run("add 2 and 40, then draw")
        assert result.output == "done"
        specs = {s.name: s for s in model.calls[0][1]}
        assert specs["add"].description == "Add two integers."
        assert specs["add"].parameters["required"] == ["a", "b"]
        add, picture = _observations(agent)
        assert (add.content, add.is_error) == ("42", False)
        assert "[Image saved: mcp-image-1.png]" in picture.content
        assert [Path(a.path).name for a in picture.attachments] == ["mcp-image-1.png"]
        assert (tmp_path / "mcp-image-1.png").read_bytes().startswith(b"\x89PNG")
    finally:
        await agent.aclose()
    closed = await tools[0].call({"a": 1, "b": 1}, _ctx(tmp_path))
    assert closed.is_error and "closed" in closed.content


async def test_a_server_that_crashes_mid_call_is_an_observation_and_restarts(tmp_path):
    async with MCPServers({"command": sys.executable, "args": [str(SERVER), "files"]}, max_restarts=1) as group:
        tools = {t.name: t for t in group.tools}
        first = (await tools["pid"].call({}, _ctx(tmp_path))).content
        crashed = await tools["crash"].call({}, _ctx(tmp_path))
        assert crashed.is_error
        assert "the `files` MCP server stopped during the call to `crash`" in crashed.content
        assert "restarted on the next call" in crashed.content
        assert wait_gone(int(first)) == []
        again = await tools["pid"].call({}, _ctx(tmp_path))
        assert not again.is_error and again.content.startswith(str(int(again.content.split()[0])))
        assert int(again.content.split()[0]) != int(first)
        assert "restarted" in again.content  # the model learns the server lost its state
        # The budget: one restart, then the server stays down with a clear observation.
        await tools["crash"].call({}, _ctx(tmp_path))
        final = await tools["add"].call({"a": 1, "b": 2}, _ctx(tmp_path))
        assert final.is_error and "not restarted again" in final.content


async def test_an_http_server_that_goes_away_is_an_observation(http_server, tmp_path):
    url = http_server()
    async with MCPServers(url, max_restarts=1) as group:
        add = next(t for t in group.tools if t.name == "add")
        assert (await add.call({"a": 1, "b": 2}, _ctx(tmp_path))).content == "3"
        server = http_server.procs[0]
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        gone = await add.call({"a": 1, "b": 2}, _ctx(tmp_path))
        assert gone.is_error and "the `files` MCP server stopped during the call to `add`" in gone.content
        again = await add.call({"a": 1, "b": 2}, _ctx(tmp_path))  # the restart cannot connect either
        assert again.is_error and "the `files` MCP server is not available" in again.content


async def test_a_slow_call_times_out_and_a_hung_server_is_restarted(tmp_path):
    entry = {"command": sys.executable, "args": [str(SERVER), "files"], "timeout": 2}
    async with MCPServers(entry) as group:
        tools = {t.name: t for t in group.tools}
        pid = int((await tools["pid"].call({}, _ctx(tmp_path))).content)
        started = time.monotonic()
        slow = await tools["hang"].call({}, _ctx(tmp_path))
        assert time.monotonic() - started < 15
        assert slow.is_error and "`hang` did not finish within 2 s" in slow.content
        assert int((await tools["pid"].call({}, _ctx(tmp_path))).content) == pid  # still the same server
        os.kill(pid, signal.SIGSTOP)  # now it answers nothing at all
        try:
            hung = await tools["add"].call({"a": 1, "b": 2}, _ctx(tmp_path))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert hung.is_error and "the `files` MCP server is not responding" in hung.content
        assert wait_gone(pid) == []
        fresh = await tools["add"].call({"a": 1, "b": 2}, _ctx(tmp_path))
        assert not fresh.is_error and fresh.content.startswith("3")


async def test_tool_errors_become_error_observations(tmp_path):
    async with MCPServers(stdio()) as group:
        tools = {t.name: t for t in group.tools}
        failed = await tools["fail"].call({}, _ctx(tmp_path))
        assert failed.is_error and "the disk is on fire" in failed.content
        wrong = await tools["add"].call({"a": 1, "b": "many"}, _ctx(tmp_path))
        assert wrong.is_error and "b" in wrong.content


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tools_with_invalid_schemas_are_left_out_with_a_reason(transport, http_server, tmp_path):
    server = stdio("hostile") if transport == "stdio" else http_server("hostile")
    async with MCPServers(server) as group:
        names = sorted(t.name for t in group.tools)
        assert "good" in names and "required" not in names and "broken" not in names
        reasons = "\n".join(group.skipped)
        assert "`required` of the `hostile` MCP server: its inputSchema is not valid JSON Schema" in reasons
        assert "`broken` of the `hostile` MCP server: its inputSchema is not valid JSON Schema" in reasons
        good = next(t for t in group.tools if t.name == "good")
        assert (await good.call({}, _ctx(tmp_path))).content == "called good"


async def test_a_server_that_cannot_start_is_an_error_that_says_why(tmp_path):
    missing = tmp_path / "no-such-server"
    with pytest.raises(MCPServerError, match="did not start"):
        await mcp_tools(str(missing))
    with pytest.raises(MCPServerError, match="exit|start"):
        await mcp_tools([sys.executable, "-c", "import sys; sys.exit('broken server')"])


async def test_clashing_names_are_prefixed_with_the_server_name(tmp_path):
    async with MCPServers("one=" + " ".join(stdio()), "two=" + " ".join(stdio()), reserved=["pid"]) as group:
        names = {t.name for t in group.tools}
        assert {"one_add", "two_add", "one_pid", "two_pid"} <= names
        assert "add" not in names and "pid" not in names
        one_add = next(t for t in group.tools if t.name == "one_add")
        assert (await one_add.call({"a": 1, "b": 1}, _ctx(tmp_path))).content == "2"
    # A tool of the agent's own keeps its name; the MCP tool that would shadow it is prefixed.
    async with MCPServers(stdio()) as group:

        @tool
        def add(a: int, b: int) -> int:
            "Add locally."
            return a + b

        agent = Agent(ScriptedModel([]), tools=[add], workspace=tmp_path)
        group.attach(agent)
        assert agent.tools["add"] is add and agent.tools["files_add"].mcp_name == "add"
        assert (await agent.tools["files_add"].call({"a": 2, "b": 2}, _ctx(tmp_path))).content == "4"


async def test_tool_list_changes_reach_the_agent(tmp_path):
    async with MCPServers(stdio()) as group:
        agent = Agent(ScriptedModel([]), tools=[], workspace=tmp_path)
        group.attach(agent)
        assert "extra" not in agent.tools
        grow = agent.tools["grow"]
        assert (await grow.call({}, _ctx(tmp_path))).content == "grown"
        for _ in range(100):
            if "extra" in agent.tools:
                break
            await asyncio.sleep(0.1)
        assert (await agent.tools["extra"].call({}, _ctx(tmp_path))).content == "extra works"


async def test_no_process_is_left_after_close(tmp_path):
    group = MCPServers(stdio())
    await group.start()
    tools = {t.name: t for t in group.tools}
    server = int((await tools["pid"].call({}, _ctx(tmp_path))).content)
    child = int((await tools["spawn"].call({}, _ctx(tmp_path))).content)
    assert alive(server) and alive(child)
    agent = Agent(ScriptedModel([]), tools=group.tools, workspace=tmp_path)
    await agent.aclose()
    assert wait_gone(server, child) == []


_PARENT = """
import asyncio, sys
from glm_agent.tools.mcp import MCPServers
from glm_agent.core.contracts import ToolContext

async def main():
    group = MCPServers({server!r})
    await group.start()
    tools = {{t.name: t for t in group.tools}}
    ctx = ToolContext("t", {workspace!r})
    server = (await tools["pid"].call({{}}, ctx)).content
    child = (await tools["spawn"].call({{}}, ctx)).content
    print(server, child, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_servers_die_with_a_killed_parent(tmp_path):
    code = _PARENT.format(server=stdio(), workspace=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server, child = (int(p) for p in parent.stdout.readline().split())
        assert alive(server) and alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_gone(server, child) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()

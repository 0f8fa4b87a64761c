"""The embedded model uses an MCP server's tool through its own dialect (slow: real weights)."""

from __future__ import annotations

import pytest
from mcp_helpers import stdio

from glm_agent import Agent, mcp_tools
from glm_agent.core.contracts import GenerationSettings
from glm_agent.core.messages import ToolMessage


@pytest.mark.slow
async def test_the_embedded_model_calls_an_mcp_tool(tmp_path):
    from glm_agent.engine.embedded import EmbeddedModelError, embedded_model_path

    try:
        embedded_model_path(progress=False)
    except EmbeddedModelError as exc:  # parts not installed
        pytest.skip(f"the embedded model is not installed: {exc}")
    from glm_agent.models.local import LocalModel

    model = LocalModel("embedded", progress=False).load()
    tools = [t for t in await mcp_tools(stdio()) if t.name == "pid"]
    agent = Agent(model, tools=tools, workspace=tmp_path, max_steps=3,
                  settings=GenerationSettings(temperature=0.0, max_new_tokens=200))
    try:
        result = await agent.run("Call the pid tool, then tell me the number it returned.")
    finally:
        await agent.aclose()
        await model.aclose()
    observations = [m for m in agent.history if isinstance(m, ToolMessage)]
    assert observations and observations[0].name == "pid" and not observations[0].is_error
    assert observations[0].content.strip() in result.output  # an unguessable number, from the server

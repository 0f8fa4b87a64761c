"""A tool call cut off by the token limit is an error observation for the model, never a
`completed` answer (real model: SmolLM2-135M, made to call a tool and given too few tokens)."""

from __future__ import annotations

import pytest

from glm_agent.agent import Agent
from glm_agent.core.contracts import GenerationSettings, Tool
from glm_agent.core.messages import ToolMessage, ToolResult


class Echo(Tool):
    name = "echo"
    description = "Repeat a long text back."
    parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    calls = 0

    async def call(self, arguments, ctx):
        Echo.calls += 1
        return ToolResult(content=arguments["text"])


@pytest.fixture(scope="module")
def smol():
    from glm_agent.models.local import LocalModel

    return LocalModel("smollm2", dtype="float32", progress=False).load()


async def test_cut_off_call_is_an_error_observation(smol, tmp_path):
    settings = GenerationSettings(max_new_tokens=10, tool_choice="required")
    agent = Agent(smol, [Echo()], settings=settings, max_steps=2, workspace=tmp_path)
    result = await agent.run("Echo the full text of the Declaration of Independence.")
    assert result.status != "completed"
    observations = [m for m in result.messages if isinstance(m, ToolMessage)]
    assert observations and all(m.is_error for m in observations)
    assert "cut off" in observations[0].content and "10 tokens" in observations[0].content
    assert Echo.calls == 0  # a cut call never runs

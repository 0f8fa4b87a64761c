"""The loop fed what models really write, read by the real dialect parsers.

Each turn is raw completion text; the dialect parser turns it into text and calls exactly as
it does for LocalModel, and ScriptedModel replays the result. Covered: calls made under a
tool's action name, GLM-4 built-in headers for tools the session lacks, Hermes blocks and
bare call objects under the GLM dialects, and empty replies.
"""

from __future__ import annotations

from glm_agent.agent import Agent
from glm_agent.core.messages import AssistantMessage, ToolMessage
from glm_agent.models.dialects import get_dialect
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.browser import BrowserTool, LocalIndexProvider
from glm_agent.tools.function import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def wrote(text: str, tools, dialect: str = "glm4") -> AssistantMessage:
    """The turn the loop gets when the model writes `text`, offered `tools`."""
    content, calls = get_dialect(dialect).parse(text, [t.spec() for t in tools])
    return AssistantMessage(content=content, tool_calls=calls)


def agent_for(turns, tools, tmp_path) -> Agent:
    return Agent(ScriptedModel(turns), tools=list(tools), workspace=tmp_path / "ws")


def observations(result) -> list[str]:
    return [m.content for m in result.messages if isinstance(m, ToolMessage)]


async def test_a_call_named_after_a_browser_action_reaches_the_browser(tmp_path):
    # Qwen2.5-Coder (hermes) calls `search` as a tool of its own, in its fenced JSON shape.
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "rust.html").write_text("<title>Rust guide</title><p>Rust 1.0 was released in May 2015.</p>")
    (pages / "go.html").write_text("<title>Go guide</title><p>Go is a language from Google.</p>")
    browser = BrowserTool(LocalIndexProvider(pages))
    turns = [wrote('```json\n{"name": "search", "arguments": {"query": "rust release"}}\n```', [browser], "hermes"), "May 2015."]
    async with agent_for(turns, [browser], tmp_path) as agent:
        result = await agent.run("When did Rust 1.0 come out?")
    call = result.messages[1].tool_calls[0]
    assert (call.name, call.arguments) == ("simple_browser", {"action": "search", "query": "rust release"})
    assert "Rust guide" in observations(result)[0] and result.output == "May 2015."


async def test_builtin_header_for_a_missing_tool_gets_an_observation(tmp_path):
    turns = [wrote("python\nprint(2 + 3)", [add]), "It is 5."]
    result = await agent_for(turns, [add], tmp_path).run("2+3?")
    assert result.messages[1].tool_calls[0].name == "python"  # not the final answer "python\nprint(2 + 3)"
    assert observations(result) == ["Error: there is no tool named `python`. Available tools: `add`."]
    assert result.status == "completed" and result.output == "It is 5."


async def test_a_model_stuck_on_a_missing_builtin_is_told_to_stop(tmp_path):
    turns = [wrote('simple_browser\nsearch("weather")', [add])] * 4 + ["I cannot browse."]
    result = await agent_for(turns, [add], tmp_path).run("weather?")
    assert "disabled" in observations(result)[3] and result.output == "I cannot browse."


async def test_a_hermes_block_under_glm4_runs_the_tool(tmp_path):
    turns = [wrote('\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>', [add]), "5"]
    result = await agent_for(turns, [add], tmp_path).run("2+3?")
    assert observations(result) == ["5"] and result.output == "5"


async def test_a_bare_call_object_under_glm4_0414_runs_the_tool(tmp_path):
    turns = [wrote('{"name": "add", "arguments": {"a": 4, "b": 5}}', [add], "glm4_0414"), "9"]
    result = await agent_for(turns, [add], tmp_path).run("4+5?")
    assert observations(result) == ["9"] and result.output == "9"


async def test_an_unreadable_hermes_block_under_glm4_is_reported(tmp_path):
    turns = [wrote("<tool_call>\nadd(a=2, b=3)\n</tool_call>", [add]), wrote('add\n{"a": 2, "b": 3}', [add]), "5"]
    result = await agent_for(turns, [add], tmp_path).run("2+3?")
    first, second = observations(result)
    assert first.startswith("Error: the tool call could not be read (not valid JSON") and "`add`" in first
    assert second == "5" and result.output == "5"


async def test_an_empty_completion_is_retried_then_ends_as_empty(tmp_path):
    # glm4: an empty metadata line and nothing after it.
    result = await agent_for([wrote("\n", [add]), wrote("", [add])], [add], tmp_path).run("hello?")
    assert result.status == "empty" and result.steps == 2
    result = await agent_for([wrote("\n", [add]), wrote("\nHello!", [add])], [add], tmp_path).run("hello?")
    assert result.status == "completed" and result.output == "Hello!"

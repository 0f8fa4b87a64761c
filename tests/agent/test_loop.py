"""The agent loop, driven by ScriptedModel: every way a turn can go."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from glm_agent.agent import Agent, SessionFileError
from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.events import FinalAnswer, TextDeltaEvent, ToolCallFinished
from glm_agent.core.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.models.dialects import get_dialect
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.function import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def agent_with(turns, tools=(), tmp_path=None, **kw):
    return Agent(ScriptedModel(turns), tools=list(tools), workspace=tmp_path, **kw)


async def test_plain_answer_streams_and_completes(tmp_path):
    agent = agent_with(["Hello there, friend."], tmp_path=tmp_path)
    events = [e async for e in agent.stream("hi")]
    deltas = [e.text for e in events if isinstance(e, TextDeltaEvent)]
    assert len(deltas) > 1 and "".join(deltas) == "Hello there, friend."
    assert isinstance(events[-1], FinalAnswer) and events[-1].status == "completed"
    assert [m.role for m in agent.history] == ["user", "assistant"]


async def test_one_tool_call_then_answer(tmp_path):
    agent = agent_with([ToolCall(name="add", arguments={"a": 2, "b": 40}), "It is 42."], [add], tmp_path)
    result = await agent.run("2+40?")
    assert result.status == "completed" and result.output == "It is 42." and result.steps == 2
    tool_msg = result.messages[2]
    assert isinstance(tool_msg, ToolMessage) and tool_msg.content == "42" and not tool_msg.is_error
    # The model saw the observation on its second call.
    second_call_messages = agent.model.calls[1][0]
    assert second_call_messages[-1].content == "42"
    assert agent.model.calls[0][1][0].name == "add"


async def test_parallel_calls_run_concurrently_and_come_back_in_call_order(tmp_path):
    barrier = asyncio.Barrier(3)
    finished: list[str] = []

    @tool
    async def wait_for_others(name: str, delay: float) -> str:
        """Wait until all three calls are running at once."""
        await asyncio.wait_for(barrier.wait(), timeout=5)  # would time out if run one by one
        await asyncio.sleep(delay)
        finished.append(name)
        return f"done {name}"

    calls = [ToolCall(name="wait_for_others", arguments={"name": n, "delay": d}) for n, d in (("a", 0.2), ("b", 0.0), ("c", 0.1))]
    agent = agent_with([calls, "all done"], [wait_for_others], tmp_path)
    started = time.perf_counter()
    events = [e async for e in agent.stream("go")]
    assert time.perf_counter() - started < 3
    assert finished == ["b", "c", "a"]  # completion order
    assert [e.call.arguments["name"] for e in events if isinstance(e, ToolCallFinished)] == ["b", "c", "a"]
    observations = [m.content for m in agent.history if isinstance(m, ToolMessage)]
    assert observations == ["done a", "done b", "done c"]  # history keeps call order
    assert [m.tool_call_id for m in agent.history if isinstance(m, ToolMessage)] == [c.id for c in calls]


async def test_raising_tool_becomes_an_observation(tmp_path):
    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    agent = agent_with([ToolCall(name="explode"), "Sorry, it failed."], [explode], tmp_path)
    result = await agent.run("do it")
    obs = result.messages[2]
    assert obs.is_error and "RuntimeError" in obs.content and "disk on fire" in obs.content
    assert result.status == "completed" and result.output == "Sorry, it failed."


async def test_invalid_json_arguments_are_reported_to_the_model(tmp_path):
    # What the glm4 parser makes of a broken body, fed through the loop.
    _, calls = get_dialect("glm4").parse('add\n{"a": 1, "b": }', [add.spec()])
    assert calls[0].arguments_error
    agent = agent_with([calls[0], ToolCall(name="add", arguments={"a": 1, "b": 2}), "3"], [add], tmp_path)
    result = await agent.run("1+2")
    first_obs = result.messages[2]
    assert first_obs.is_error and "could not be parsed" in first_obs.content and '"required"' in first_obs.content
    assert result.messages[4].content == "3" and result.output == "3"


async def test_schema_violations_are_reported(tmp_path):
    agent = agent_with([ToolCall(name="add", arguments={"a": "one"}), "ok"], [add], tmp_path)
    result = await agent.run("x")
    obs = result.messages[2].content
    assert "invalid arguments for `add`" in obs and "a:" in obs and "b: Field required" in obs


async def test_unknown_tool_lists_the_available_ones(tmp_path):
    agent = agent_with([ToolCall(name="send_email", arguments={"to": "x"}), "no email then"], [add], tmp_path)
    result = await agent.run("mail")
    assert "no tool named `send_email`" in result.messages[2].content and "`add`" in result.messages[2].content


async def test_retry_budget_disables_a_tool_that_keeps_failing(tmp_path):
    count = 0

    class Flaky(Tool):
        name = "flaky"
        description = "fails"
        max_retries = 2

        async def call(self, arguments, ctx):
            nonlocal count
            count += 1
            raise ValueError("nope")

    turns = [ToolCall(name="flaky")] * 4 + ["giving up"]
    agent = agent_with(turns, [Flaky()], tmp_path)
    result = await agent.run("x")
    assert count == 2  # the third and fourth calls never reached the tool
    assert "disabled" in [m for m in result.messages if isinstance(m, ToolMessage)][-1].content
    assert result.output == "giving up"


async def test_tool_timeout(tmp_path):
    class Slow(Tool):
        name = "slow"
        description = "sleeps"
        timeout = 0.2

        async def call(self, arguments, ctx):
            await asyncio.sleep(30)

    agent = agent_with([ToolCall(name="slow"), "too slow"], [Slow()], tmp_path)
    started = time.perf_counter()
    result = await agent.run("x")
    assert time.perf_counter() - started < 5
    assert "did not finish within 0.2 s" in result.messages[2].content


async def test_max_steps_stops_with_a_clear_status(tmp_path):
    agent = agent_with([ToolCall(name="add", arguments={"a": 1, "b": 1})] * 5, [add], tmp_path, max_steps=3)
    result = await agent.run("loop forever")
    assert result.status == "max_steps" and result.steps == 3
    assert "stopped after 3 steps" in result.output
    assert isinstance(agent.history[-1], ToolMessage)  # every call has its observation


async def test_model_error_ends_the_run_with_error_status(tmp_path):
    agent = agent_with([], tmp_path=tmp_path)  # no turns: the model raises
    result = await agent.run("hi")
    assert result.status == "error" and "ScriptedModel has no turn 1" in result.error
    assert result.error_type == "ModelError"


async def test_cancellation_keeps_history_consistent_and_agent_usable(tmp_path):
    started = asyncio.Event()

    @tool
    async def long_job() -> str:
        """Takes forever."""
        started.set()
        await asyncio.sleep(60)
        return "never"

    agent = agent_with([ToolCall(name="long_job"), "after restart"], [long_job], tmp_path)
    task = asyncio.create_task(agent.run("start"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(agent.history[-1], ToolMessage) and "cancelled" in agent.history[-1].content
    assert agent.run_usage["completion_tokens"] > 0  # the cut-off run's cost is still known
    result = await agent.run("next")  # the agent keeps working
    assert result.output == "after restart"


async def test_cancel_while_streaming_text(tmp_path):
    model = ScriptedModel(["word " * 200, "second answer"], delay=0.01)
    agent = Agent(model, workspace=tmp_path)
    task = asyncio.create_task(agent.run("talk"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(agent.history[-1], AssistantMessage) and 0 < len(agent.history[-1].content) < 1000
    assert (await agent.run("again")).output == "second answer"


async def test_multi_turn_keeps_history_and_reset_clears_it(tmp_path):
    agent = agent_with(["one", "two"], tmp_path=tmp_path, system="Be terse.")
    await agent.run("first")
    await agent.run("second")
    second_call = agent.model.calls[1][0]
    assert [m.role for m in second_call] == ["system", "user", "assistant", "user"]
    agent.reset()
    assert [m.role for m in agent.history] == ["system"]


async def test_save_and_restore_a_session(tmp_path):
    agent = agent_with([ToolCall(name="add", arguments={"a": 1, "b": 2}), "3 it is"], [add], tmp_path, system="sys")
    await agent.run("1+2? 中文")
    path = agent.save(tmp_path / "s" / "session.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == 1 and data["tools"] == ["add"] and "中文" in path.read_text(encoding="utf-8")
    restored = agent_with(["continued"], [add], tmp_path)
    restored.load(path)
    assert restored.history == agent.history and restored.session_id == agent.session_id
    await restored.run("and now?")
    assert restored.model.calls[0][0][:5] == agent.history


def test_save_is_atomic_when_serialisation_fails(tmp_path, monkeypatch):
    agent = agent_with(["x"], tmp_path=tmp_path)
    agent.run_sync("hi")
    path = agent.save(tmp_path / "session.json")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        agent.save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no leftovers


def test_load_rejects_bad_files(tmp_path):
    agent = agent_with([], tmp_path=tmp_path)
    with pytest.raises(SessionFileError, match="no session file"):
        agent.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SessionFileError, match="not a glm-agent session file"):
        agent.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": 99, "messages": []}))
    with pytest.raises(SessionFileError, match="unsupported session format"):
        agent.load(wrong)


def test_run_sync_keeps_one_loop_for_stateful_tools(tmp_path):
    loops = []

    @tool
    async def which_loop() -> str:
        """Record the running loop."""
        loops.append(asyncio.get_running_loop())
        return "ok"

    agent = agent_with([ToolCall(name="which_loop"), "a", ToolCall(name="which_loop"), "b"], [which_loop], tmp_path)
    assert agent.run_sync("1").output == "a"
    assert agent.run_sync("2").output == "b"
    assert loops[0] is loops[1]
    agent.close()


async def test_tools_get_the_session_workspace_and_are_closed(tmp_path):
    seen: list[ToolContext] = []
    closed = []

    class Probe(Tool):
        name = "probe"
        description = "records its context"

        async def call(self, arguments, ctx):
            seen.append(ctx)
            (ctx.workspace / "out.txt").write_text("hi")
            return await super().call(arguments, ctx) if False else __import__("glm_agent").ToolResult(content="ok")

        async def aclose(self):
            closed.append(True)

    async with Agent(ScriptedModel([ToolCall(name="probe"), "done"]), tools=[Probe()], workspace=tmp_path / "ws", session_id="s1") as agent:
        await agent.run("x")
    assert seen[0].workspace == tmp_path / "ws" and seen[0].session_id == "s1"
    assert (tmp_path / "ws" / "out.txt").read_text() == "hi"
    assert closed == [True]


def test_duplicate_tool_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Agent(ScriptedModel([]), tools=[add, add])


async def test_user_message_recorded_first(tmp_path):
    agent = agent_with(["ok"], tmp_path=tmp_path)
    result = await agent.run("question")
    assert isinstance(result.messages[0], UserMessage) and result.messages[0].content == "question"


async def test_calls_to_a_missing_tool_spend_a_retry_budget(tmp_path):
    # A model stuck on a tool that does not exist is told, then told to stop, like a failing tool.
    turns = [ToolCall(name="send_email", arguments={"to": "x"})] * 4 + ["no email then"]
    agent = agent_with(turns, [add], tmp_path)
    result = await agent.run("mail")
    observations = [m.content for m in result.messages if isinstance(m, ToolMessage)]
    assert all("no tool named `send_email`" in o for o in observations[:3])
    assert "`send_email` failed 3 times in a row and is disabled" in observations[3]
    assert result.status == "completed" and result.output == "no email then"


async def test_a_call_that_names_no_tool_says_it_could_not_be_read(tmp_path):
    unreadable = ToolCall(name="", raw_arguments="get weather please", arguments_error="not valid JSON: Expecting value")
    result = await agent_with([unreadable, "sorry"], [add], tmp_path).run("x")
    obs = result.messages[2]
    assert obs.is_error and "could not be read (not valid JSON: Expecting value)" in obs.content and "`add`" in obs.content


async def test_an_empty_reply_is_asked_for_again_once(tmp_path):
    agent = agent_with(["", "Paris."], tmp_path=tmp_path)
    result = await agent.run("Capital of France?")
    assert result.status == "completed" and result.output == "Paris." and result.steps == 2
    from glm_agent.agent.loop import EMPTY_REPLY_NOTE

    assert [(m.role, m.content) for m in result.messages] == [
        ("user", "Capital of France?"), ("assistant", ""), ("user", EMPTY_REPLY_NOTE), ("assistant", "Paris.")]
    assert agent.model.calls[1][0][-1].content == EMPTY_REPLY_NOTE  # the retry saw the note


async def test_two_empty_replies_end_the_run_as_empty(tmp_path):
    result = await agent_with(["", " \n", "never reached"], [add], tmp_path).run("x")
    assert result.status == "empty" and result.steps == 2 and result.output.strip() == ""
    # Whitespace is empty too; a tool call between two empty replies restarts the count.
    turns = ["", ToolCall(name="add", arguments={"a": 1, "b": 2}), "", "3"]
    result = await agent_with(turns, [add], tmp_path).run("1+2")
    assert result.status == "completed" and result.output == "3"


async def test_an_empty_reply_on_the_last_step_ends_as_empty(tmp_path):
    turns = [ToolCall(name="add", arguments={"a": 1, "b": 2}), ""]
    result = await agent_with(turns, [add], tmp_path, max_steps=2).run("1+2")
    assert result.status == "empty" and result.steps == 2

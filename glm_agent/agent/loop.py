"""The agent: one loop, async at heart, that alternates model turns and tool calls.

    user ─► model.stream ─► text | tool calls ─► tools run concurrently ─► observations ─► model ...

It stops on a final answer (a turn without tool calls) or at `max_steps`. Anything a tool
does wrong (raises, times out, gets bad arguments, does not exist) becomes an observation
the model can read; the loop itself only ends on model errors or cancellation. An empty
reply is asked for again once, then ends the run with status "empty".
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import AsyncIterator, Sequence

from glm_agent.agent.session import (
    SESSION_FORMAT,
    SessionFileError,
    check_session_id,
    default_home,
    read_session_file,
    sessions_root,
    write_session_file,
)
from glm_agent.core.contracts import ChatModel, GenerationSettings, Tool, ToolContext
from glm_agent.core.errors import ToolArgumentsError
from glm_agent.core.events import (
    AgentEvent,
    ErrorEvent,
    FinalAnswer,
    ModelDone,
    RunResult,
    StepStarted,
    TextDelta,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallReady,
    ToolCallStarted,
)
from glm_agent.core.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
    messages_adapter,
    new_call_id,
)
from glm_agent.core.terminal import safe_text

__all__ = ["Agent", "SessionFileError", "default_home", "SESSION_FORMAT"]

# An empty reply is asked for again this many times, with this note, before the run ends.
EMPTY_RETRIES = 1
EMPTY_REPLY_NOTE = "(Your last reply was empty. Answer the request above, or call one of the tools.)"


class Agent:
    """A tool-using agent over any `ChatModel`.

    ```python
    agent = Agent(model, tools=[get_weather], system="You are helpful.")
    result = await agent.run("Weather in Beijing?")
    async for event in agent.stream("And in Paris?"): ...
    ```
    History is kept across runs (multi-turn); `reset()` clears it. Close the agent (or use
    `async with`) to release tool resources such as kernels and browsers.
    """

    def __init__(
        self,
        model: ChatModel,
        tools: Sequence[Tool] = (),
        *,
        system: str | None = None,
        max_steps: int = 10,
        settings: GenerationSettings | None = None,
        workspace: str | Path | None = None,
        session_id: str | None = None,
        tool_timeout: float | None = 120.0,
    ):
        names = [t.name for t in tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"two tools share the name(s) {sorted(duplicates)}; tool names must be unique")
        self.model = model
        self.tools: dict[str, Tool] = {t.name: t for t in tools}
        self.system = system
        self.max_steps = max_steps
        self.settings = settings
        self.tool_timeout = tool_timeout
        # The id names the session's folder: checked here, and again on every load.
        default_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        self.session_id = check_session_id(session_id) if session_id else default_id
        self._workspace = Path(workspace) if workspace else None
        # Default workspaces this agent created: removed at close if nothing was put in them.
        self._made_workspaces: set[Path] = set()
        self.history: list[Message] = []
        self.reset()
        self._failures: dict[str, int] = {}
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        # Tokens of the current (or last) run, kept up to date while it runs: a caller that
        # cancels a run (a timeout) still knows what it cost.
        self.run_usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0}

    # ---- session -------------------------------------------------------------------------

    @property
    def workspace(self) -> Path:
        """The session's working folder (tool outputs, images, files the model writes).

        The `workspace=` the program gave, else `<home>/sessions/<session_id>`; never a folder
        named by a session file. Made on first use."""
        return self._make_workspace(self.session_id)

    def _make_workspace(self, session_id: str) -> Path:
        if self._workspace is not None:
            self._workspace.mkdir(parents=True, exist_ok=True)
            return self._workspace
        folder = sessions_root() / check_session_id(session_id)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self._made_workspaces.add(folder)
        return folder

    def _remove_empty_workspaces(self) -> None:
        """Remove the default workspaces this agent made and nothing was written to."""
        for folder in self._made_workspaces:
            try:
                os.rmdir(folder)  # only an empty folder goes; a link put in its place is not followed
            except OSError:
                pass
        self._made_workspaces.clear()

    def reset(self) -> None:
        """Forget the conversation (tools keep their state, e.g. kernel variables)."""
        self.history = [SystemMessage(content=self.system)] if self.system else []

    def save(self, path: str | Path) -> Path:
        """Write the session to a JSON file atomically: a crash never leaves half a file.

        OSError when `path` cannot be written (a directory, no permission)."""
        payload = {
            "format": SESSION_FORMAT,
            "session_id": self.session_id,
            "model": getattr(self.model, "name", type(self.model).__name__),
            "tools": sorted(self.tools),
            "system": self.system,
            # Only an explicit workspace is recorded (so `load` can refuse a mismatch); the
            # default one follows from the id, and the file stays valid under another home.
            "workspace": str(self._workspace.absolute()) if self._workspace is not None else None,
            "messages": messages_adapter.dump_python(self.history, mode="json"),
        }
        return write_session_file(path, payload)

    def load(self, path: str | Path) -> None:
        """Replace this agent's conversation with the one saved in `path`.

        The file is untrusted: it is validated whole first, and any problem raises
        SessionFileError with the agent left exactly as it was. It never chooses the
        workspace: a file whose `workspace` differs from this agent's is refused."""
        session = read_session_file(path)
        session_id = session.session_id or self.session_id
        expected = self._workspace if self._workspace is not None else sessions_root() / session_id
        if session.workspace is not None and Path(session.workspace) not in (expected, expected.absolute()):
            raise SessionFileError(
                f"{path}: field 'workspace' names {safe_text(session.workspace)[:200]!r}, but this agent works in "
                f"{expected}; a session file cannot choose the folder: to work there, create the agent with "
                "that workspace (chat: --workspace), or remove the field"
            )
        self.history = list(session.messages)
        self.system = session.system
        self.session_id = session_id

    # ---- running -------------------------------------------------------------------------

    async def run(self, prompt: str) -> RunResult:
        """Run one user turn to its end and return the answer with the trajectory."""
        start = len(self.history)
        final: FinalAnswer | None = None
        error: ErrorEvent | None = None
        steps = 0
        usage = [0, 0]
        async for event in self._stream(prompt, usage):
            if isinstance(event, StepStarted):
                steps = event.step
            elif isinstance(event, FinalAnswer):
                final = event
            elif isinstance(event, ErrorEvent):
                error = event
        assert final is not None
        return RunResult(
            output=final.text,
            status=final.status,
            steps=steps,
            messages=self.history[start:],
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            error=error.message if error else None,
            error_type=error.error_type if error else None,
        )

    def run_sync(self, prompt: str) -> RunResult:
        """Blocking `run` for scripts; one private event loop per agent keeps tools alive."""
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        return self._sync_loop.run_until_complete(self.run(prompt))

    def stream(self, prompt: str) -> AsyncIterator[AgentEvent]:
        """Run one user turn, yielding events as they happen."""
        return self._stream(prompt, [0, 0])

    async def _stream(self, prompt: str, usage: list[int]) -> AsyncIterator[AgentEvent]:
        self.history.append(UserMessage(content=prompt))
        self._failures.clear()
        self.run_usage = {"prompt_tokens": 0, "completion_tokens": 0}
        specs = [t.spec() for t in self.tools.values()]
        last_text = ""
        empty_replies = 0
        for step in range(1, self.max_steps + 1):
            yield StepStarted(step=step)
            text_parts: list[str] = []
            calls: list[ToolCall] = []
            finish = ""
            try:
                async for event in self.model.stream(list(self.history), specs, self.settings):
                    if isinstance(event, TextDelta):
                        text_parts.append(event.text)
                        yield TextDeltaEvent(text=event.text)
                    elif isinstance(event, ToolCallReady):
                        calls.append(event.call)
                    elif isinstance(event, ModelDone):
                        finish = event.finish_reason
                        usage[0] += event.prompt_tokens
                        usage[1] += event.completion_tokens
                        self.run_usage = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
            except asyncio.CancelledError:
                # Keep what was said so the history stays a valid conversation.
                self.history.append(AssistantMessage(content="".join(text_parts)))
                raise
            except Exception as exc:  # a backend failure ends the run, never the program
                self.history.append(AssistantMessage(content="".join(text_parts)))
                message = f"{type(exc).__name__}: {exc}"
                yield ErrorEvent(message=message, error_type=type(exc).__name__)
                yield FinalAnswer(text="".join(text_parts), status="error")
                return
            text = "".join(text_parts)
            last_text = text or last_text
            seen: set[str] = set()
            for call in calls:  # the model may repeat or omit ids; results need unique ones
                if not call.id or call.id in seen:
                    call.id = new_call_id()
                seen.add(call.id)
            self.history.append(AssistantMessage(content=text, tool_calls=calls))
            if not calls and not text.strip():
                # Nothing at all is no answer: ask once more (the note also changes the prompt,
                # so a greedy decoder does not repeat itself), then say how the run ended.
                empty_replies += 1
                if empty_replies > EMPTY_RETRIES or step == self.max_steps:
                    yield FinalAnswer(text=text, status="empty")
                    return
                self.history.append(UserMessage(content=EMPTY_REPLY_NOTE))
                continue
            empty_replies = 0
            if not calls:
                yield FinalAnswer(text=text, status="completed")
                return
            # A call the token limit cut off is a failed call the model hears about, never an answer.
            cut = {c.id for c in calls if c.arguments_error} if finish == "length" else set()
            async for event in self._run_tools(calls, cut):
                yield event
        yield FinalAnswer(
            text=last_text or f"(stopped after {self.max_steps} steps without a final answer)",
            status="max_steps",
        )

    async def _run_tools(self, calls: list[ToolCall], cut: set[str] = frozenset()) -> AsyncIterator[AgentEvent]:
        """Run one turn's calls concurrently; events as they finish, history in call order."""
        for call in calls:
            yield ToolCallStarted(call=call)
        results: dict[str, ToolResult] = {}
        done: asyncio.Queue[ToolCallFinished] = asyncio.Queue()

        async def run_one(call: ToolCall) -> None:
            started = time.perf_counter()
            result = await self._call_tool(call, cut_off=call.id in cut)
            results[call.id] = result
            await done.put(ToolCallFinished(call=call, result=result, seconds=time.perf_counter() - started))

        tasks = [asyncio.create_task(run_one(c)) for c in calls]
        try:
            for _ in calls:
                yield await done.get()
        finally:
            # Cancelled (or the consumer stopped): stop the tools and still answer every call,
            # so the saved conversation never has a call without its observation.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for call in calls:
                result = results.get(call.id) or ToolResult(content="(cancelled before it finished)", is_error=True)
                self.history.append(ToolMessage.from_result(call, result))

    async def _call_tool(self, call: ToolCall, cut_off: bool = False) -> ToolResult:
        tool = self.tools.get(call.name)
        # A call to a tool that does not exist (or that could not be read at all) spends a
        # budget of its own, as a failing tool does: a model stuck on it is told to stop.
        budget = tool.max_retries if tool is not None else Tool.max_retries
        if self._failures.get(call.name, 0) >= budget:
            what = f"`{call.name}`" if call.name else "a tool call that names no tool"
            return ToolResult(
                content=f"Error: {what} failed {budget} times in a row and is disabled for the rest "
                "of this turn. Answer with what you have, or explain what went wrong.",
                is_error=True,
            )
        if cut_off:
            result = self._cut_off(call)
        elif tool is None:
            result = self._no_such_tool(call)
        elif call.arguments_error:
            result = ToolResult(
                content=f"Error: the arguments for `{tool.name}` could not be parsed ({call.arguments_error}). "
                f"Call it again with a JSON object matching its schema: {json.dumps(tool.parameters, ensure_ascii=False)}",
                is_error=True,
            )
        else:
            result = await self._execute(tool, call)
        self._failures[call.name] = self._failures.get(call.name, 0) + 1 if result.is_error else 0
        return result

    def _cut_off(self, call: ToolCall) -> ToolResult:
        limit = f" ({self.settings.max_new_tokens} tokens)" if self.settings is not None else ""
        what = f"your call to `{call.name}`" if call.name else "your tool call"
        return ToolResult(
            content=f"Error: {what} was cut off: the reply reached its token limit{limit} before the call was "
            "complete, so nothing ran. Call the tool again with shorter arguments (write long content in parts).",
            is_error=True,
        )

    def _no_such_tool(self, call: ToolCall) -> ToolResult:
        available = ", ".join(f"`{n}`" for n in self.tools) or "none"
        if call.name:
            problem = f"there is no tool named `{call.name}`"
        else:
            problem = f"the tool call could not be read ({call.arguments_error or 'it names no tool'})"
        return ToolResult(content=f"Error: {problem}. Available tools: {available}.", is_error=True)

    async def _execute(self, tool: Tool, call: ToolCall) -> ToolResult:
        session_id = self.session_id
        # The folder is made only if the tool asks for it (a browser or a pure function does not).
        ctx = ToolContext(session_id=session_id, workspace=lambda: self._make_workspace(session_id))
        timeout = tool.timeout if tool.timeout is not None else self.tool_timeout
        try:
            return await asyncio.wait_for(tool.call(dict(call.arguments), ctx), timeout)
        except asyncio.TimeoutError:
            return ToolResult(content=f"Error: `{tool.name}` did not finish within {timeout:g} s.", is_error=True)
        except ToolArgumentsError as exc:
            return ToolResult(content=f"Error: {exc}", is_error=True)
        except Exception as exc:
            return ToolResult(content=f"Error: `{tool.name}` raised {type(exc).__name__}: {exc}", is_error=True)

    # ---- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release every tool's resources; errors in one tool do not stop the others."""
        results = await asyncio.gather(*(t.aclose() for t in self.tools.values()), return_exceptions=True)
        for tool, result in zip(self.tools.values(), results):
            if isinstance(result, BaseException):
                import warnings

                warnings.warn(f"closing tool {tool.name!r} failed: {result!r}", stacklevel=2)
        self._remove_empty_workspaces()  # after the tools: a kernel may still be writing there

    def close(self) -> None:
        """Blocking `aclose`, for agents driven with `run_sync`."""
        loop = self._sync_loop if self._sync_loop and not self._sync_loop.is_closed() else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.aclose())
        finally:
            loop.close()
            self._sync_loop = None

    async def __aenter__(self) -> "Agent":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

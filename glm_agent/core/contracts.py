"""The two contracts the agent loop is written against: `ChatModel` and `Tool`.

A `ChatModel` turns messages + tool specs into a stream of model events (text as it is
decoded, each tool call once complete, then one `ModelDone`). A `Tool` is a name, a
description, a JSON schema for its arguments and an async `call` returning a `ToolResult`.
Everything else (local engine, OpenAI client, browser, sandbox) plugs in behind these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol, runtime_checkable

from glm_agent.core.events import ModelEvent
from glm_agent.core.messages import Message, ToolResult

__all__ = ["ToolSpec", "GenerationSettings", "ChatModel", "Tool", "ToolContext"]


@dataclass(frozen=True)
class ToolSpec:
    """What a model needs to know about a tool: its name, what it does, its JSON schema.

    How a model family spells calls to it (GLM-4's raw-text built-ins, for one) is the
    dialect's business, decided from the name and the schema.
    """

    name: str
    description: str
    parameters: dict[str, Any]

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # "auto" | "none" | "required" | {"name": tool}: whether (and which) tool the turn must call.
    tool_choice: str | dict = "auto"
    # OpenAI's response_format: {"type": "json_schema", "json_schema": {"schema": {...}}} or
    # {"type": "json_object"} makes the answer one such JSON value (models that can enforce it).
    response_format: dict | None = None
    # Grammar-constrained tool calls (LocalModel): None = the model's default, False = off.
    constrained: bool | None = None


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: GenerationSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Yield text deltas and complete tool calls, then exactly one `ModelDone`."""
        ...

    async def aclose(self) -> None: ...


class ToolContext:
    """What a tool may know about the session that called it.

    `workspace` may be given as a function that makes the folder and returns it: it is then
    called the first time a tool reads `ctx.workspace`, so a session whose tools never use
    the folder leaves none behind.
    """

    def __init__(self, session_id: str, workspace: Path | Callable[[], Path]):
        self.session_id = session_id
        self._workspace = workspace

    @property
    def workspace(self) -> Path:
        if callable(self._workspace):
            self._workspace = Path(self._workspace())
        return self._workspace

    @workspace.setter
    def workspace(self, value: Path | Callable[[], Path]) -> None:
        self._workspace = value

    def __repr__(self) -> str:
        where = "(not made yet)" if callable(self._workspace) else str(self._workspace)
        return f"ToolContext(session_id={self.session_id!r}, workspace={where})"


class Tool:
    """Base class for tools. Subclasses set the class attributes and implement `call`.

    `timeout` (seconds) bounds one call; `max_retries` is how many failing calls in a row
    the agent lets the model make before the tool is reported as unavailable.
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    timeout: float | None = None
    max_retries: int = 3

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the tool holds for its session (kernels, browsers, pipelines)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

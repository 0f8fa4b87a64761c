"""Typed events: what a model streams, and what the agent loop yields while it works.

A `ChatModel` yields `TextDelta`, `ToolCallReady` and one final `ModelDone`. The agent loop
turns those into its own events (steps, text, tool calls and their results, the final
answer, errors), which the CLI renders and applications consume. All of them are `Event`s:
pydantic models told apart by their `type`, so any of them serialises to JSON the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from glm_agent.core.messages import Message, ToolCall, ToolResult

__all__ = [
    "Event",
    "TextDelta",
    "ToolCallReady",
    "ModelDone",
    "ModelEvent",
    "RunStatus",
    "StepStarted",
    "TextDeltaEvent",
    "ToolCallStarted",
    "ToolCallFinished",
    "FinalAnswer",
    "ErrorEvent",
    "AgentEvent",
    "RunResult",
]


class Event(BaseModel):
    """The base of every event: `type` says which one it is."""

    type: str


# ---- what a model streams --------------------------------------------------------------


class TextDelta(Event):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ToolCallReady(Event):
    type: Literal["tool_call_ready"] = "tool_call_ready"
    call: ToolCall


class ModelDone(Event):
    type: Literal["model_done"] = "model_done"
    finish_reason: str = "stop"  # stop | length | tool_calls | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, reused from the model's KV cache (not computed)


ModelEvent = Union[TextDelta, ToolCallReady, ModelDone]


# ---- what the agent loop yields --------------------------------------------------------

# "empty": the model gave an empty reply, also when asked again.
RunStatus = Literal["completed", "max_steps", "error", "cancelled", "empty"]


class StepStarted(Event):
    type: Literal["step"] = "step"
    step: int


class TextDeltaEvent(Event):
    type: Literal["text"] = "text"
    text: str


class ToolCallStarted(Event):
    type: Literal["tool_call"] = "tool_call"
    call: ToolCall


class ToolCallFinished(Event):
    type: Literal["tool_result"] = "tool_result"
    call: ToolCall
    result: ToolResult
    seconds: float = 0.0


class FinalAnswer(Event):
    type: Literal["final"] = "final"
    text: str
    status: RunStatus = "completed"


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    message: str
    error_type: str | None = None  # the exception class, e.g. "ContextOverflowError"
    recoverable: bool = False


AgentEvent = Annotated[
    Union[StepStarted, TextDeltaEvent, ToolCallStarted, ToolCallFinished, FinalAnswer, ErrorEvent],
    Field(discriminator="type"),
]


class RunResult(BaseModel):
    """The outcome of one `Agent.run`: the answer, how it ended, and the trajectory."""

    output: str
    status: RunStatus
    steps: int
    messages: list[Message] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_type: str | None = None

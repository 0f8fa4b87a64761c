"""Typed events: what a model streams, and what the agent loop yields while it works.

A `ChatModel` yields `TextDelta`, `ToolCallReady` and one final `ModelDone`. The agent loop
turns those into its own events (steps, text, tool calls and their results, the final
answer, errors), which the CLI renders and applications consume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from glm_agent.core.messages import Message, ToolCall, ToolResult

__all__ = [
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


# ---- what a model streams --------------------------------------------------------------


@dataclass
class TextDelta:
    text: str
    kind: Literal["text"] = "text"


@dataclass
class ToolCallReady:
    call: ToolCall
    kind: Literal["tool_call"] = "tool_call"


@dataclass
class ModelDone:
    finish_reason: str = "stop"  # stop | length | tool_calls | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    kind: Literal["done"] = "done"


ModelEvent = Union[TextDelta, ToolCallReady, ModelDone]


# ---- what the agent loop yields --------------------------------------------------------

RunStatus = Literal["completed", "max_steps", "error", "cancelled"]


class StepStarted(BaseModel):
    type: Literal["step"] = "step"
    step: int


class TextDeltaEvent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolCallStarted(BaseModel):
    type: Literal["tool_call"] = "tool_call"
    call: ToolCall


class ToolCallFinished(BaseModel):
    type: Literal["tool_result"] = "tool_result"
    call: ToolCall
    result: ToolResult
    seconds: float = 0.0


class FinalAnswer(BaseModel):
    type: Literal["final"] = "final"
    text: str
    status: RunStatus = "completed"


class ErrorEvent(BaseModel):
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

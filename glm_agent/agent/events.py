"""Typed events the agent loop yields while it works; the CLI renders them, apps consume them."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from glm_agent.agent.messages import Message, ToolCall, ToolResult

__all__ = [
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

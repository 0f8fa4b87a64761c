"""Conversation messages: what the agent loop, the dialects and the backends exchange.

The loop never sees prompt text or tokens, only these objects. They are pydantic models so
that a whole session serialises to JSON and back without loss.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

__all__ = [
    "Attachment",
    "ToolCall",
    "ToolResult",
    "SystemMessage",
    "UserMessage",
    "AssistantMessage",
    "ToolMessage",
    "Message",
    "new_call_id",
    "messages_adapter",
]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class Attachment(BaseModel):
    """A file a tool produced for the user (an image, a full log)."""

    path: str
    mime: str = "application/octet-stream"
    description: str = ""


class ToolCall(BaseModel):
    """One function call the model asked for.

    `arguments_error` is set when the model's argument text could not be parsed; the
    original text is kept in `raw_arguments` so the loop can tell the model what was wrong.
    """

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None
    arguments_error: str | None = None


class ToolResult(BaseModel):
    """What a tool returns: text for the model, files for the user.

    `metadata` is the observation header some dialects carry (GLM-4: `browser_result`,
    `quote_result [7†source]`, `cogview_result`). `full_output` keeps what was cut from
    `content` for the model, so the user can still see everything.
    """

    content: str
    attachments: list[Attachment] = Field(default_factory=list)
    is_error: bool = False
    metadata: str | None = None
    full_output: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class SystemMessage(BaseModel):
    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ToolMessage(BaseModel):
    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    metadata: str | None = None
    is_error: bool = False
    attachments: list[Attachment] = Field(default_factory=list)

    @classmethod
    def from_result(cls, call: ToolCall, result: ToolResult) -> "ToolMessage":
        return cls(
            tool_call_id=call.id,
            name=call.name,
            content=result.content,
            metadata=result.metadata,
            is_error=result.is_error,
            attachments=result.attachments,
        )


Message = Annotated[
    Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage],
    Field(discriminator="role"),
]

messages_adapter: TypeAdapter[list[Message]] = TypeAdapter(list[Message])

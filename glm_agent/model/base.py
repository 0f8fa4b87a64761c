"""The `ChatModel` contract every backend implements (local engine, OpenAI API, scripted).

A backend turns messages + tool specs into a stream of `ModelEvent`s: text as it is decoded,
each tool call once it is complete, and a final `ModelDone` with token usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Protocol, Union, runtime_checkable

from glm_agent.agent.messages import Message, ToolCall

__all__ = [
    "ToolSpec",
    "GenerationSettings",
    "TextDelta",
    "ToolCallReady",
    "ModelDone",
    "ModelEvent",
    "ChatModel",
    "ModelError",
    "ContextOverflowError",
]


@dataclass(frozen=True)
class ToolSpec:
    """What a model needs to know about a tool.

    `raw_arg` names the argument that receives the raw call body in dialects where a
    built-in tool takes free text (GLM-4: `python` code, `simple_browser` actions,
    `cogview` prompts). `glm_builtin` is the GLM-4 template's tool type for those.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    raw_arg: str | None = None
    glm_builtin: str | None = None

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


class ModelError(RuntimeError):
    """A backend failed in a way the user can act on; the message says how."""


class ContextOverflowError(ModelError):
    """The conversation no longer fits the model's context window."""


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

"""`ScriptedModel`: a ChatModel that replays given assistant turns, for tests, demos and oracles."""

from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator, Callable, Sequence, Union

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.errors import ModelError
from glm_agent.core.events import ModelDone, ModelEvent, TextDelta, ToolCallReady
from glm_agent.core.messages import AssistantMessage, Message, ToolCall

__all__ = ["ScriptedModel", "Turn"]

Turn = Union[str, ToolCall, Sequence[ToolCall], AssistantMessage, Callable[[list[Message]], object]]


def _as_message(turn: object) -> AssistantMessage:
    if isinstance(turn, AssistantMessage):
        return turn
    if isinstance(turn, str):
        return AssistantMessage(content=turn)
    if isinstance(turn, ToolCall):
        return AssistantMessage(tool_calls=[turn])
    if isinstance(turn, (list, tuple)) and all(isinstance(c, ToolCall) for c in turn):
        return AssistantMessage(tool_calls=list(turn))
    raise TypeError(f"ScriptedModel cannot replay a turn of type {type(turn).__name__}")


class ScriptedModel:
    """Replays `turns` one per model call.

    A turn is final text, one or more `ToolCall`s, an `AssistantMessage`, or a callable that
    receives the conversation so far and returns one of those (oracles that react to what the
    tools returned). Text is streamed in word-sized pieces so streaming code paths are exercised;
    `delay` sleeps between pieces (cancellation tests). Every call's inputs are kept in `calls`.
    """

    def __init__(self, turns: Sequence[Turn], *, name: str = "scripted", delay: float = 0.0):
        self.turns = list(turns)
        self.name = name
        self.delay = delay
        self.calls: list[tuple[list[Message], list[ToolSpec]]] = []

    @property
    def remaining(self) -> int:
        return len(self.turns) - len(self.calls)

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: GenerationSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        index = len(self.calls)
        self.calls.append((list(messages), list(tools)))
        if index >= len(self.turns):
            raise ModelError(f"ScriptedModel has no turn {index + 1}: only {len(self.turns)} were scripted")
        turn = self.turns[index]
        if callable(turn) and not isinstance(turn, (ToolCall, AssistantMessage)):
            turn = turn(list(messages))
        message = _as_message(turn)
        pieces = re.findall(r"\S+\s*|\s+", message.content)
        for piece in pieces:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(text=piece)
        for call in message.tool_calls:
            yield ToolCallReady(call=call.model_copy())
        yield ModelDone(
            finish_reason="tool_calls" if message.tool_calls else "stop",
            prompt_tokens=sum(len(getattr(m, "content", "")) for m in messages) // 4,
            completion_tokens=max(1, len(message.content) // 4),
        )

    async def aclose(self) -> None:
        return None

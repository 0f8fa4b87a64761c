"""What a dialect is: render a conversation to prompt text, parse generated text back.

Parsing is incremental: `feed` takes text as it is decoded and returns what is already
certain (text to show, complete tool calls), holding back only the few characters that
might still turn into a tool-call marker. So plain answers stream at once.

Rendering wraps everything that comes from a message or a tool spec (texts, tool names,
descriptions, schemas, call arguments, observation metadata) with `mark`, so the prompt knows
its content spans and the tokenizer encodes them as plain text (`glm_agent.engine.prompt`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Sequence

from glm_agent.core.messages import Message, ToolCall
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.contracts import ToolSpec
from glm_agent.models.dialects._json import JSONArgumentsError, loads_tolerant, strip_fences
from glm_agent.engine.prompt import Prompt

__all__ = ["Dialect", "StreamParser", "ParsedEvent", "build_call", "parse_all", "held_suffix"]

ParsedEvent = TextDelta | ToolCallReady


class StreamParser(ABC):
    @abstractmethod
    def feed(self, text: str) -> list[ParsedEvent]: ...

    @abstractmethod
    def finish(self) -> list[ParsedEvent]: ...


class Dialect(ABC):
    name: str = ""
    # Text that ends the assistant's turn (the engine also stops on the matching token ids).
    stop_strings: tuple[str, ...] = ()

    @abstractmethod
    def render_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True
    ) -> Prompt:
        """The prompt text with its content spans."""

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True) -> str:
        return self.render_prompt(messages, tools, add_generation_prompt).text

    @abstractmethod
    def parser(self, tools: Sequence[ToolSpec]) -> StreamParser: ...

    def parse(self, text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
        """Parse a whole completion at once: (visible text, tool calls)."""
        return parse_all(self.parser(tools), text)


def parse_all(parser: StreamParser, text: str) -> tuple[str, list[ToolCall]]:
    events = parser.feed(text) + parser.finish()
    out = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    return out, calls


def held_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of one of `markers`.

    Those characters must be held back: the next chunk may complete the marker.
    """
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-n:]):
                best = n
                break
    return best


def build_call(name: str, body: str, tools: dict[str, ToolSpec]) -> ToolCall:
    """A ToolCall from a tool name and the model's argument text.

    Built-in tools with a `raw_arg` take a free-text body (code, browser actions, an image
    prompt) unless the body is a JSON object; everything else must be JSON.
    """
    spec = tools.get(name)
    stripped = body.strip()
    if spec is not None and spec.raw_arg:
        if stripped.startswith("{"):
            try:
                value = loads_tolerant(stripped)
                if isinstance(value, dict) and (spec.raw_arg in value or set(value) <= set(spec.parameters.get("properties", {}))):
                    return ToolCall(name=name, arguments=value, raw_arguments=body)
            except JSONArgumentsError:
                pass
        return ToolCall(name=name, arguments={spec.raw_arg: strip_fences(stripped)}, raw_arguments=body)
    if not stripped:
        return ToolCall(name=name, arguments={}, raw_arguments=body)
    try:
        value = loads_tolerant(stripped)
    except JSONArgumentsError as exc:
        return ToolCall(name=name, raw_arguments=body, arguments_error=str(exc))
    if isinstance(value, str):  # arguments double-encoded as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, dict):
        return ToolCall(
            name=name, raw_arguments=body, arguments_error=f"expected a JSON object, got {type(value).__name__}"
        )
    return ToolCall(name=name, arguments=value, raw_arguments=body)

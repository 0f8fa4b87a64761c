"""What a dialect is: render a conversation to prompt text, parse generated text back.

Parsing is incremental: `feed` takes text as it is decoded and returns what is already
certain (text to show, complete tool calls), holding back only the few characters that
might still turn into a tool-call marker or a stop string. So plain answers stream at once.

Every parser shares two things, done here once: cutting the stream at the first stop string
(`StopScanner`), and giving a call made under one of a tool's action names to that tool
(`route_action`).

Rendering wraps everything that comes from a message or a tool spec (texts, tool names,
descriptions, schemas, call arguments, observation metadata) with `mark`, so the prompt knows
its content spans and the tokenizer encodes them as plain text (`glm_agent.engine.prompt`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, Iterable, Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.messages import Message, ToolCall
from glm_agent.engine.prompt import Prompt
from glm_agent.models.dialects._json import JSONArgumentsError, loads_tolerant

__all__ = [
    "Dialect",
    "StreamParser",
    "StopScanner",
    "ParsedEvent",
    "build_call",
    "parse_all",
    "held_suffix",
    "route_action",
    "sole_string_argument",
]

ParsedEvent = TextDelta | ToolCallReady


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


class StopScanner:
    """Cuts a text stream at the first stop string, whichever chunks it arrives in.

    `feed` returns the text that is certainly before any stop string and holds back an end
    that may still become one; once a stop string is seen (`hit`), nothing more ever comes
    out. Empty stop strings are ignored: one would match at once and swallow the turn.
    """

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        buf = self.pending + text
        cuts = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.pending, self.hit = "", True
            return buf[: min(cuts)]
        keep = held_suffix(buf, self.stops)
        self.pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back end, at the end of the stream (it never became a stop string)."""
        out, self.pending = self.pending, ""
        return out


def _action_names(spec: ToolSpec) -> list[Any]:
    props = spec.parameters.get("properties") if isinstance(spec.parameters, dict) else None
    action = props.get("action") if isinstance(props, dict) else None
    names = action.get("enum") if isinstance(action, dict) else None
    return names if isinstance(names, list) else []


def route_action(call: ToolCall, tools: dict[str, ToolSpec]) -> ToolCall:
    """A call named after one tool's action (`search(...)` for the browser's "search") as a
    call of that tool with `{"action": name, **arguments}`.

    Small models call a sub-command as if it were a tool of its own. This lives in the
    dialect layer, not in the loop or the tool, because it is about reading what the model
    wrote: the schema says it all (the values of a tool's `action` enum), and the call then
    reaches history, the loop and the server's clients under the tool's real name. Only a
    name that is no tool and belongs to exactly one tool's actions is routed.
    """
    if call.name in tools or call.arguments_error is not None:
        return call
    owners = [spec for spec in tools.values() if call.name in _action_names(spec)]
    if len(owners) != 1:
        return call
    arguments = {"action": call.name, **call.arguments}
    return call.model_copy(
        update={"name": owners[0].name, "arguments": arguments,
                "raw_arguments": json.dumps(arguments, ensure_ascii=False)}
    )


def sole_string_argument(spec: ToolSpec | None) -> str | None:
    """The argument a bare string body belongs to: the schema's only required argument, if
    it is a string (`code` for python, `prompt` for an image tool, `command` for a shell)."""
    if spec is None or not isinstance(spec.parameters, dict):
        return None
    required = spec.parameters.get("required")
    props = spec.parameters.get("properties")
    if not (isinstance(required, list) and len(required) == 1 and isinstance(props, dict)):
        return None
    prop = props.get(required[0])
    return required[0] if isinstance(prop, dict) and prop.get("type") == "string" else None


class StreamParser(ABC):
    """Incremental parser of one assistant turn.

    The base cuts the text at the stop strings and routes action-named calls; a dialect
    implements `_parse`, which sees only text before any stop string.
    """

    def __init__(self, tools: Sequence[ToolSpec], stop_strings: Iterable[str] = ()):
        self.tools: dict[str, ToolSpec] = {t.name: t for t in tools}
        self._scanner = StopScanner(stop_strings)
        self._closed = False

    @property
    def stopped(self) -> bool:
        """A stop string was seen: the turn is over (a generator can stop decoding)."""
        return self._scanner.hit

    def feed(self, text: str) -> list[ParsedEvent]:
        if self._closed:
            return []
        clean = self._scanner.feed(text)
        self._closed = self._scanner.hit  # the turn ended: resolve everything now
        return self._routed(self._parse(clean, final=self._closed))

    def finish(self) -> list[ParsedEvent]:
        if self._closed:
            return []
        self._closed = True
        return self._routed(self._parse(self._scanner.flush(), final=True))

    @abstractmethod
    def _parse(self, text: str, final: bool) -> list[ParsedEvent]:
        """Take the next piece of the turn; `final`: nothing more will come."""

    def _routed(self, events: list[ParsedEvent]) -> list[ParsedEvent]:
        return [ToolCallReady(call=route_action(e.call, self.tools)) if isinstance(e, ToolCallReady) else e for e in events]


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
    def parser(self, tools: Sequence[ToolSpec], stop: Sequence[str] = ()) -> StreamParser:
        """A parser for one turn; it ends the turn at `stop_strings` and at the extra `stop`."""

    def parse(self, text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
        """Parse a whole completion at once: (visible text, tool calls)."""
        return parse_all(self.parser(tools), text)


def parse_all(parser: StreamParser, text: str) -> tuple[str, list[ToolCall]]:
    events = parser.feed(text) + parser.finish()
    out = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    return out, calls


def build_call(name: str, body: str) -> ToolCall:
    """A ToolCall from a tool name and the model's JSON argument text (empty: no arguments)."""
    stripped = body.strip()
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

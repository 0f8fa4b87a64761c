"""The Hermes / Qwen2.5 dialect (`<tools>` in the system turn, `<tool_call>` JSON replies).

Render matches Qwen2.5's chat template (ChatML turns, tools as one JSON schema per line,
tool results as `<tool_response>` blocks inside a user turn). Parsing is tolerant of what
Qwen2.5-Coder really emits: it rarely uses the `<tool_call>` tags and instead writes the call
as a ```json fenced block or a bare object, sometimes with doubled braces (its own template
shows `{{"name": ...}}`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.engine.loading import TOOL_ERROR_NUDGE, TOOL_RESULT_NUDGE
from glm_agent.engine.prompt import Prompt, mark
from glm_agent.models.dialects._json import JSONArgumentsError, find_json_objects, loads_tolerant
from glm_agent.models.dialects.base import Dialect, ParsedEvent, StreamParser, held_suffix, sole_string_argument

__all__ = ["HermesDialect", "HermesStreamParser", "DEFAULT_SYSTEM"]

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
    "</tool_call><|im_end|>\n"
)
OPEN, CLOSE = "<tool_call>", "</tool_call>"
# Qwen2.5-Coder often echoes the system prompt's `<tools></tools>` block before its call.
ECHO_OPEN, ECHO_CLOSE = "<tools>", "</tools>"
FENCE = "```"
# Prompt text the model sometimes repeats in its answer (the tool-result turn's markup and the
# nudges appended to results): dropped from what the user sees, the rest of the answer is kept.
PROMPT_ECHOES = ("<tool_response>", "</tool_response>", TOOL_RESULT_NUDGE, TOOL_ERROR_NUDGE)
_LINE_BRACE = re.compile(r"(?:^|\n)[ \t]*\{")  # a `{` that starts a line
# A fenced call is tagged `json` (or not at all); any other tag is code, shown as it streams.
CALL_FENCE_TAGS = ("", "json", "json5", "tool_call")
_FENCE_TAG = re.compile(r"[\w+.#-]*")


def _tojson(value: Any) -> str:
    # The template's `tojson` (as transformers defines it): non-ASCII kept, default separators.
    return json.dumps(value, ensure_ascii=False)


class HermesDialect(Dialect):
    name = "hermes"
    stop_strings = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, default_system: str = DEFAULT_SYSTEM):
        self.default_system = default_system

    def render_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True
    ) -> Prompt:
        messages = list(messages)
        # The default system text is ours (markup); a system message is content.
        first_system = mark(messages[0].content) if messages and isinstance(messages[0], SystemMessage) else None
        system = first_system if first_system is not None else self.default_system
        out: list[str] = []
        if tools:
            out.append("<|im_start|>system\n" + system)
            out.append(TOOLS_INTRO)
            for spec in tools:
                out.append("\n" + mark(_tojson(spec.openai_schema())))
            out.append(TOOLS_OUTRO)
        else:
            out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        for i, message in enumerate(messages):
            if isinstance(message, UserMessage) or (isinstance(message, SystemMessage) and i > 0):
                out.append(f"<|im_start|>{message.role}\n{mark(message.content)}<|im_end|>\n")
            elif isinstance(message, AssistantMessage) and not message.tool_calls:
                out.append(f"<|im_start|>assistant\n{mark(message.content)}<|im_end|>\n")
            elif isinstance(message, AssistantMessage):
                out.append("<|im_start|>assistant")
                if message.content:
                    out.append("\n" + mark(message.content))
                for call in message.tool_calls:
                    out.append(
                        '\n<tool_call>\n{"name": "' + mark(call.name) + '", "arguments": '
                        + mark(_tojson(call.arguments)) + "}\n</tool_call>"
                    )
                out.append("<|im_end|>\n")
            elif isinstance(message, ToolMessage):
                if i == 0 or not isinstance(messages[i - 1], ToolMessage):
                    out.append("<|im_start|>user")
                out.append(f"\n<tool_response>\n{mark(message.content)}\n</tool_response>")
                if i == len(messages) - 1 or not isinstance(messages[i + 1], ToolMessage):
                    out.append("<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return Prompt.parse("".join(out))

    def parser(self, tools: Sequence[ToolSpec], stop: Sequence[str] = ()) -> StreamParser:
        return HermesStreamParser(tools, stop_strings=(*self.stop_strings, *stop))


def call_from_object(value: Any, tools: dict[str, ToolSpec], tagged: bool = False) -> ToolCall | None:
    """`{"name": ..., "arguments": {...}}` (or `parameters`) -> ToolCall; None if not a call.

    Outside `<tool_call>` tags an object with other keys is data, not a call."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if not tagged and set(value) - {"name", "arguments", "parameters", "id", "type"}:
        return None
    raw = value.get("arguments", value.get("parameters", {}))
    if isinstance(raw, str):  # arguments double-encoded as a JSON string
        try:
            raw = loads_tolerant(raw)
        except JSONArgumentsError:
            # Plain text (`"arguments": "print(1)"`): the tool's one string argument, if it has one.
            target = sole_string_argument(tools.get(value["name"]))
            if target is not None:
                raw = {target: raw}
            else:
                return ToolCall(name=value["name"], raw_arguments=raw, arguments_error="arguments is a string that is not JSON")
    if not isinstance(raw, dict):
        return ToolCall(name=value["name"], raw_arguments=json.dumps(raw), arguments_error="arguments must be a JSON object")
    return ToolCall(name=value["name"], arguments=raw, raw_arguments=json.dumps(raw, ensure_ascii=False))


class HermesStreamParser(StreamParser):
    """Streams text; holds back spans that may be a tool call until they resolve.

    Candidates: a `<tool_call>…</tool_call>` block, a ``` fenced block, an echoed `<tools>`
    block, or a `{` that starts a line. A candidate that turns out to be no call is released
    as ordinary text; a `<tool_call>` block is always a call (one that may carry an error).
    A fence is released as soon as it cannot be a call (a tag other than json, or no `{`/`[`
    first inside), and the code inside it then streams with no candidates until it closes.
    Prompt text the model repeats (`<tool_response>` tags, the tool-result nudges) is dropped.

    The GLM dialects reuse it for their answer text with `fences=False, echo=False` (fenced
    code is common in answers and GLM never fences a call) and `bare_needs_arguments=True`
    (a bare object is a call only with its `arguments`, not `{"name": "Ann"}`).
    """

    def __init__(
        self,
        tools: Sequence[ToolSpec],
        stop_strings: Sequence[str] = (),
        *,
        fences: bool = True,
        echo: bool = True,
        bare_needs_arguments: bool = False,
    ):
        super().__init__(tools, stop_strings)
        self.fences, self.bare_needs_arguments = fences, bare_needs_arguments
        self.markers = (OPEN,) + ((FENCE,) if fences else ()) + ((ECHO_OPEN, *PROMPT_ECHOES) if echo else ())
        # Without fence candidates, a fence's inside is answer text (JSON shown to the user):
        # count the fences shown so far (`shown_tail`: a fence may span two pieces).
        self.fences_shown = 0
        self.shown_tail = ""
        self.buf = ""
        self.at_line_start = True
        self.after_call = False

    def _parse(self, text: str, final: bool) -> list[ParsedEvent]:
        self.buf += text
        return self._drain(final)

    def _candidate_start(self) -> int:
        starts = [m.start() for marker in self.markers for m in re.finditer(re.escape(marker), self.buf)]
        starts += [m.end() - 1 for m in _LINE_BRACE.finditer(self.buf) if m.group()[0] == "\n" or self.at_line_start]
        for start in sorted(starts):
            # Inside a fence already shown as text (code, or any fence when `fences` is off)
            # nothing is a candidate until its closing fence has been shown too.
            if (self.fences_shown + (self.shown_tail + self.buf[:start]).count(FENCE)) % 2 == 0:
                return start
        return -1

    def _text(self, events: list[ParsedEvent], text: str) -> None:
        if self.after_call:  # newlines between consecutive calls are layout, not answer text
            text = text.lstrip("\n")
            self.after_call = not text
        if text:
            events.append(TextDelta(text=text))
            self.at_line_start = text.endswith("\n")
            shown = self.shown_tail + text
            self.fences_shown += shown.count(FENCE)
            self.shown_tail = shown[-(len(FENCE) - 1) :].replace(FENCE, "")

    def _drain(self, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while self.buf:
            start = self._candidate_start()
            if start < 0:
                hold = 0 if final else held_suffix(self.buf, self.markers)
                if not final and self.buf.rstrip(" \t").endswith("\n"):
                    hold = max(hold, len(self.buf) - len(self.buf.rstrip(" \t")))  # a `{` may follow
                self._text(events, self.buf[: len(self.buf) - hold])
                self.buf = self.buf[len(self.buf) - hold :]
                return events
            self._text(events, self.buf[:start])
            self.buf = self.buf[start:]
            echo = next((e for e in PROMPT_ECHOES if self.buf.startswith(e) and e in self.markers), None)
            if echo is not None:  # prompt text repeated by the model: never shown
                self.buf = self.buf[len(echo) :]
                self.after_call = True  # and the newline that laid it out goes with it
                continue
            end, calls = self._resolve(final)
            if end is None:  # the candidate is not complete yet
                return events
            if calls or self.buf.startswith(ECHO_OPEN):  # an echoed tools block is never answer text
                for call in calls:
                    events.append(ToolCallReady(call=call))
                self.at_line_start = self.after_call = True
            else:  # not a call after all: release its first character as text and go on
                self._text(events, self.buf[: max(end, 1)])
                self.buf = self.buf[max(end, 1) :]
                continue
            self.buf = self.buf[end:]
        return events

    def _resolve(self, final: bool) -> tuple[int | None, list[ToolCall]]:
        """At a candidate start: (chars consumed or None if undecided, calls found)."""
        buf = self.buf
        for opening, closing in ((OPEN, CLOSE), (ECHO_OPEN, ECHO_CLOSE)):
            if buf.startswith(opening) and opening in self.markers:
                close = buf.find(closing)
                if close < 0 and not final:
                    return None, []
                body = buf[len(opening) : close if close >= 0 else len(buf)]
                end = close + len(closing) if close >= 0 else len(buf)
                return end, self._calls_in(body, tagged=opening == OPEN)
        if buf.startswith(FENCE) and self.fences:
            decided = self._fence_is_code(final)
            if decided is None:
                return None, []
            if decided:  # release the opening fence and its tag now; the code streams after it
                return len(FENCE) + len(_FENCE_TAG.match(buf, len(FENCE)).group()), []
            close = buf.find(FENCE, len(FENCE))
            if close < 0 and not final:
                return None, []
            end = close + len(FENCE) if close >= 0 else len(buf)
            body = re.sub(r"^[\w+-]*\n", "", buf[len(FENCE) : end - len(FENCE) if close >= 0 else end], count=1)
            return end, self._calls_in(body, tagged=False)
        # A bare object at a line start.
        if not final and buf.startswith("{{") and buf.count("{") > buf.count("}"):
            return None, []  # doubled braces: wait until they balance, undoubling is ambiguous before
        objects = find_json_objects(buf)
        # A stray extra `{` before the object (`{{"name": ..., "arguments": {...}}`) is noise.
        if objects and not buf[: objects[0][0]].strip("{ \t"):
            _, end, value = objects[0]
            while end < len(buf) and buf[end] == "}" and buf[:end].count("{") > buf[:end].count("}"):
                end += 1  # the closing half of a doubled brace
            if self.bare_needs_arguments and not (isinstance(value, dict) and {"arguments", "parameters"} & set(value)):
                return end, []
            call = call_from_object(value, self.tools)
            return (end, [call]) if call else (end, [])
        if not final and buf.count("{") > buf.count("}"):
            return None, []  # still open
        return 1, []

    def _fence_is_code(self, final: bool) -> bool | None:
        """At a ``` candidate: True when it cannot hold a call (a tag other than json, or
        something other than `{`/`[` first inside), False when it may, None: too early to say.
        Deciding early lets a code answer stream instead of arriving whole at its closing fence."""
        buf = self.buf
        tag = _FENCE_TAG.match(buf, len(FENCE)).group()
        rest = buf[len(FENCE) + len(tag) :]
        if not any(t.startswith(tag.lower()) for t in CALL_FENCE_TAGS):
            return True  # no call tag starts like this, whatever follows
        if not rest:
            return None if not final else False
        if tag.lower() not in CALL_FENCE_TAGS:
            return True  # the tag is complete (something follows it) and it is not json
        body = rest.lstrip()
        if not body:
            return None if not final else False
        return body[0] not in "{["

    def _calls_in(self, body: str, tagged: bool) -> list[ToolCall]:
        calls = []
        for _, _, value in find_json_objects(body):
            items = value if isinstance(value, list) else [value]
            for item in items:
                call = call_from_object(item, self.tools, tagged=tagged)
                if call:
                    calls.append(call)
        if tagged and not calls:
            # The model said it is calling a tool: a block we cannot read is a call with an
            # error (the loop tells the model what is wrong), never answer text. No name: "".
            try:
                loads_tolerant(body)
                problem = 'the <tool_call> block holds no {"name": ..., "arguments": {...}} object'
            except JSONArgumentsError as exc:
                problem = str(exc)
            name = re.search(r'"name"\s*:\s*"([^"]+)"', body)
            return [ToolCall(name=name.group(1) if name else "", raw_arguments=body.strip(), arguments_error=problem)]
        return calls

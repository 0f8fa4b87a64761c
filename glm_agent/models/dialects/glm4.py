"""The glm-4-9b-chat dialect (the 2024 "All Tools" format).

Render, exactly as the model's HF chat template does:

    [gMASK]<sop><|system|>
    你是一个名为 ChatGLM 的人工智能助手。…

    # 可用工具
    ## get_weather

    { ...the function, JSON with indent 4... }
    在调用上述函数时，请使用 Json 格式表示调用的参数。<|user|>
    ...<|assistant|>get_weather
    {"city": "Beijing"}<|observation|>
    {"temp": 22}<|assistant|>
    answer

A turn is `<|role|>{metadata}\n{content}` with no end-of-turn token. The model answers after a
bare `<|assistant|>`: an empty first line means text, a tool name means a call whose body is
JSON (functions) or raw text (the built-ins, `BUILTINS`).

GLM-4's built-ins are known here by tool name: `python` (raw body = code), `simple_browser`
(raw body = action lines such as `search("q")`) and `cogview` (raw body = image prompt). The
template lists them by type with fixed texts, and their call bodies are raw text.

Outputs that are clearly calls in another shape are read as calls (or as calls the loop
answers with an error the model can act on) rather than shown as an answer: a built-in's
header for a tool this session does not have, and a Hermes `<tool_call>` block or a bare
`{"name": ..., "arguments": ...}` object in the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.events import ToolCallReady
from glm_agent.core.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.engine.prompt import Prompt, mark
from glm_agent.models.dialects._json import JSONArgumentsError, loads_tolerant, strip_fences
from glm_agent.models.dialects.base import Dialect, ParsedEvent, StreamParser, build_call, held_suffix
from glm_agent.models.dialects.hermes import HermesStreamParser

__all__ = ["GLM4Dialect", "GLMStreamParser", "Builtin", "BUILTINS", "SELF_INTRO", "GLM_STOP_STRINGS"]

SELF_INTRO = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)
FUNCTION_SUFFIX = "在调用上述函数时，请使用 Json 格式表示调用的参数。"

_PYTHON_TEXT = (
    "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
    "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
    "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。"
    "不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
)
_BROWSER_TEXT = (
    "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
    "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
    "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。"
    "选择多个角度的页面，同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
    "`open_url(url: str)`：打开指定的 URL。\n\n"
    "使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n"
    "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n"
    " 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
    "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。"
)
_COGVIEW_TEXT = (
    "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。你需要向 `cogview` 发送图像描述，规则：\n"
    "- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
    "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n"
    "- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
    "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。"
)


@dataclass(frozen=True)
class Builtin:
    """How GLM-4 knows one of our tools: the template's tool type, the argument its raw call
    body fills, and the fixed text the template shows instead of a JSON schema."""

    kind: str
    raw_arg: str
    text: str


# Our tools that GLM-4 knows as built-ins, by tool name (the texts are the template's own).
BUILTINS: dict[str, Builtin] = {
    "python": Builtin("python", "code", _PYTHON_TEXT),
    "simple_browser": Builtin("simple_browser", "action", _BROWSER_TEXT),
    "cogview": Builtin("cogview", "prompt", _COGVIEW_TEXT),
}
_KIND_TO_NAME = {b.kind: name for name, b in BUILTINS.items()}

GLM_STOP_STRINGS = ("<|user|>", "<|observation|>", "<|endoftext|>")
ASSISTANT = "<|assistant|>"
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.\-]*$")


def function_json(spec: ToolSpec) -> str:
    """The function as the template's `tojson(indent=4)` prints it (non-ASCII kept)."""
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    return json.dumps(function, ensure_ascii=False, indent=4)


def builtin_of(name: str, spec: ToolSpec | None = None) -> Builtin | None:
    """The built-in a tool named `name` is, if any. A registered tool of that name whose
    schema lacks the built-in's argument is an ordinary function (someone's own `python`)."""
    builtin = BUILTINS.get(name)
    if builtin is None or spec is None:
        return builtin
    props = spec.parameters.get("properties") if isinstance(spec.parameters, dict) else None
    return builtin if isinstance(props, dict) and builtin.raw_arg in props else None


def call_body(name: str, arguments: dict, tools: dict[str, ToolSpec]) -> str:
    builtin = builtin_of(name, tools.get(name))
    if builtin is not None and set(arguments) == {builtin.raw_arg}:
        return str(arguments[builtin.raw_arg])
    return json.dumps(arguments, ensure_ascii=False)


def builtin_call(name: str, body: str, builtin: Builtin, spec: ToolSpec | None) -> ToolCall:
    """A built-in's call: the raw body is its argument, unless the body is a JSON object of
    its arguments."""
    stripped = body.strip()
    if stripped.startswith("{"):
        props = spec.parameters.get("properties", {}) if spec is not None else {builtin.raw_arg: {}}
        try:
            value = loads_tolerant(stripped)
        except JSONArgumentsError:
            value = None
        if isinstance(value, dict) and (builtin.raw_arg in value or set(value) <= set(props)):
            return ToolCall(name=name, arguments=value, raw_arguments=body)
    return ToolCall(name=name, arguments={builtin.raw_arg: strip_fences(stripped)}, raw_arguments=body)


def render_turns(messages: Sequence[Message], tools: dict[str, ToolSpec], builtins: bool = True) -> str:
    """The `<|role|>{metadata}\\n{content}` turns shared by glm4 and glm4_0414 (content marked).

    `builtins`: write built-in calls with their raw bodies (glm4), else every body as JSON."""
    out: list[str] = []

    def turn(role: str, metadata: str, content: str) -> None:
        if content:  # the template skips empty turns
            out.append(f"<|{role}|>{mark(metadata)}\n{mark(content)}")

    for message in messages:
        if isinstance(message, SystemMessage):
            turn("system", "", message.content)
        elif isinstance(message, UserMessage):
            turn("user", "", message.content)
        elif isinstance(message, AssistantMessage):
            turn("assistant", "", message.content)
            for call in message.tool_calls:
                body = call_body(call.name, call.arguments, tools) if builtins else json.dumps(call.arguments, ensure_ascii=False)
                turn("assistant", call.name, body)
        elif isinstance(message, ToolMessage):
            turn("observation", message.metadata or "", message.content)
    return "".join(out)


class GLM4Dialect(Dialect):
    name = "glm4"
    stop_strings = GLM_STOP_STRINGS

    def __init__(self, self_intro: str = SELF_INTRO):
        self.self_intro = self_intro

    def tools_block(self, tools: Sequence[ToolSpec]) -> str:
        """The system turn listing the tools; tool names and specs are marked content."""
        parts = [f"<|system|>\n{self.self_intro}\n\n# 可用工具"]
        for spec in tools:
            # One newline before `##`, not the two the template source shows: HF renders chat
            # templates with trim_blocks, which eats the newline after each `{% if %}` tag.
            builtin = builtin_of(spec.name, spec)
            if builtin is not None:
                parts.append(f"\n## {builtin.kind}\n\n{builtin.text}")
            else:
                parts.append(f"\n## {mark(spec.name)}\n\n{mark(function_json(spec))}\n{FUNCTION_SUFFIX}")
        return "".join(parts)

    def render_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True
    ) -> Prompt:
        by_name = {t.name: t for t in tools}
        text = "[gMASK]<sop>"
        if tools:
            text += self.tools_block(tools)
        text += render_turns(messages, by_name)
        return Prompt.parse(text + (ASSISTANT if add_generation_prompt else ""))

    def parser(self, tools: Sequence[ToolSpec], stop: Sequence[str] = ()) -> StreamParser:
        return GLMStreamParser(tools, stop_strings=(*self.stop_strings, *stop))


class GLMStreamParser(StreamParser):
    """Incremental parser for `<|assistant|>`-separated segments whose first line is metadata.

    States: `header` (reading the metadata line), `text` (streaming an answer through a Hermes
    parser that picks out `<tool_call>` blocks and call-shaped objects), `call` (collecting a
    call body until the next `<|assistant|>` or the end).
    """

    def __init__(self, tools: Sequence[ToolSpec], stop_strings: Sequence[str] = GLM_STOP_STRINGS):
        super().__init__(tools, stop_strings)
        # The template names built-ins by type; a registered built-in answers to its type too.
        self.kinds = {b.kind: name for name, spec in self.tools.items() if (b := builtin_of(name, spec))}
        self.buf = ""
        self.mode = "header"
        self.call_name = ""
        self.text = self._text_parser()

    def _text_parser(self) -> HermesStreamParser:
        return HermesStreamParser(list(self.tools.values()), fences=False, echo=False, bare_needs_arguments=True)

    def _segment_text(self, text: str, final: bool) -> list[ParsedEvent]:
        """Answer text of the current segment; `final` ends the segment."""
        events = self.text.feed(text)
        if final:
            events += self.text.finish()
            self.text = self._text_parser()
        return events

    def _tool_name(self, header: str) -> str | None:
        """The tool a header line names: a registered tool, or any GLM-4 built-in (one this
        session lacks is still a call: the loop tells the model which tools there are)."""
        if header in self.tools:
            return header
        return self.kinds.get(header) or _KIND_TO_NAME.get(header)

    def _call(self, name: str, body: str) -> ToolCall:
        spec = self.tools.get(name)
        builtin = builtin_of(name, spec)
        return build_call(name, body) if builtin is None else builtin_call(name, body, builtin, spec)

    def _could_be_tool_name(self, head: str) -> bool:
        head = head.strip()
        if not head:
            return True
        return any(name.startswith(head) for name in self.tools) or (len(head) <= 64 and bool(_IDENTIFIER.match(head)))

    def _parse(self, text: str, final: bool) -> list[ParsedEvent]:
        self.buf += text
        events: list[ParsedEvent] = []
        while True:
            if self.mode == "header":
                newline = self.buf.find("\n")
                marker = self.buf.find(ASSISTANT)
                if 0 <= marker and (newline < 0 or marker < newline):
                    # `<|assistant|>` with no metadata line: an empty segment, skip it.
                    header, self.buf = self.buf[:marker], self.buf[marker + len(ASSISTANT) :]
                    if header.strip():
                        events += self._segment_text(header, final=True)
                    continue
                if newline < 0:
                    if final:
                        head = self.buf.strip()
                        if head and head in self.tools:
                            events.append(ToolCallReady(call=self._call(head, "")))
                        elif head and head in self.kinds:
                            events.append(ToolCallReady(call=self._call(self.kinds[head], "")))
                        elif self.buf:
                            events += self._segment_text(self.buf, final=True)
                        self.buf = ""
                        return events
                    if self._could_be_tool_name(self.buf):
                        return events
                    self.mode = "text"
                    continue
                header, rest = self.buf[:newline].strip(), self.buf[newline + 1 :]
                name = self._tool_name(header)
                if not header:
                    self.mode, self.buf = "text", rest
                elif name is not None:
                    self.mode, self.call_name, self.buf = "call", name, rest
                elif _IDENTIFIER.match(header) and len(header) <= 64:
                    # An unknown name is a call only if a JSON body follows (the loop then
                    # tells the model the tool does not exist); otherwise it was prose.
                    body = rest.lstrip()
                    if not body and not final:
                        return events
                    if body.startswith("{"):
                        self.mode, self.call_name, self.buf = "call", header, rest
                    else:
                        self.mode = "text"
                else:
                    self.mode = "text"
            elif self.mode == "text":
                marker = self.buf.find(ASSISTANT)
                if marker >= 0:
                    events += self._segment_text(self.buf[:marker], final=True)
                    self.mode, self.buf = "header", self.buf[marker + len(ASSISTANT) :]
                    continue
                hold = 0 if final else held_suffix(self.buf, (ASSISTANT,))
                emit = self.buf[: len(self.buf) - hold]
                events += self._segment_text(emit, final=final)
                self.buf = self.buf[len(emit) :]
                return events
            else:  # call
                marker = self.buf.find(ASSISTANT)
                if marker < 0 and not final:
                    return events
                end = marker if marker >= 0 else len(self.buf)
                events.append(ToolCallReady(call=self._call(self.call_name, self.buf[:end])))
                self.buf = self.buf[end + len(ASSISTANT) :] if marker >= 0 else ""
                self.mode = "header"
                if marker < 0:
                    return events
